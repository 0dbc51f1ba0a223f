//! The standalone `sendgrid-emulator` binary on loopback: it answers, takes scripted
//! faults from flags and the control endpoint, and shows its state.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; returns the status and body.
fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn standalone_emulator_serves_faults_and_state() {
    let list = "0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11";
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendgrid-emulator"))
        .args([
            "--key",
            "k1",
            "--list",
            &format!("{list}=news"),
            "--field",
            "ltv=Number",
        ])
        .args([
            "--faults",
            r#"{"upserts":[{"kind":"status","status":503}]}"#,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _running = Running(child);
    let addr = line.trim().strip_prefix("http://").unwrap().to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let (status, body) = http(&addr, "GET", "/v3/scopes", Some("nope"), "");
    assert_eq!(
        (status, body.as_str()),
        (
            401,
            r#"{"errors":[{"field":null,"message":"authorization required"}]}"#
        )
    );

    let upsert = format!(r#"{{"list_ids":["{list}"],"contacts":[{{"email":"a@b.co"}}]}}"#);
    assert_eq!(
        http(&addr, "PUT", "/v3/marketing/contacts", Some("k1"), &upsert).0,
        503
    );
    let (status, body) = http(&addr, "PUT", "/v3/marketing/contacts", Some("k1"), &upsert);
    assert_eq!(status, 202, "{body}");

    let faults = r#"{"upserts":[{"kind":"status","status":500}]}"#;
    assert_eq!(
        http(&addr, "POST", "/_emulator/faults", None, faults).0,
        204
    );
    assert_eq!(
        http(&addr, "PUT", "/v3/marketing/contacts", Some("k1"), &upsert).0,
        500
    );

    let (_, state) = http(&addr, "GET", "/_emulator/state", None, "");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["lists"][list]["contacts"][0]["email"], "a@b.co");
    let statuses: Vec<u64> = state["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 503, 202, 500]);
    assert_eq!(state["requests"][2]["upserted"][0]["list_ids"][0], list);
}

#[test]
fn mistakes_in_the_flags_are_said_with_what_to_give() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sendgrid-emulator"))
            .args(args)
            .output()
            .unwrap()
    };
    let bad_faults = run(&["--key", "k", "--faults", "{upserts"]);
    assert!(!bad_faults.status.success());
    let said = String::from_utf8_lossy(&bad_faults.stderr);
    assert!(
        said.starts_with(
            "Error: --faults: key must be a string at line 1 column 2 (e.g. '{\"upserts\""
        ),
        "{said}"
    );

    let bad_type = run(&["--key", "k", "--field", "ltv=Numbr"]);
    assert!(!bad_type.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad_type.stderr).lines().next(),
        Some("Error: --field ltv=Numbr: the type is Text, Number or Date")
    );
    let bad_list = run(&["--key", "k", "--list", "news"]);
    assert!(!bad_list.status.success());
    assert!(
        String::from_utf8_lossy(&bad_list.stderr)
            .starts_with("Error: --list news: a list id is a UUID"),
    );

    // A port another process holds is named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let busy = run(&["--key", "k", "--port", &port]);
    assert!(!busy.status.success());
    let said = String::from_utf8_lossy(&busy.stderr);
    assert!(
        said.starts_with(&format!("Error: cannot listen on 127.0.0.1:{port}: ")),
        "{said}"
    );
}

#[test]
fn without_a_key_it_says_every_request_will_be_refused() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendgrid-emulator"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut note = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut note)
        .unwrap();
    let _running = Running(child);
    assert_eq!(
        note,
        "note: no --key given, so every request is refused (401); give the key the pipeline's connection uses: --key \"$SENDGRID_API_KEY\"\n"
    );
}
