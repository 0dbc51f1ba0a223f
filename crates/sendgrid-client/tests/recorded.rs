//! Answers of the live API, replayed through the client over HTTP on loopback, and what the
//! client concludes from each. Statuses, headers and body shapes are those recorded from
//! `api.sendgrid.com` (May 2021; see docs/sendgrid.md); emails, names and ids are ours.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use sendgrid_client::{Client, ClientError, FieldType, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One recorded answer: status, rate-limit headers (limit, remaining, reset) and body.
struct Answer {
    status: u16,
    rate: Option<(u32, u32, u64)>,
    body: &'static str,
}

/// What the replay server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    at: Instant,
}

/// Serves `answers` in order, one per request, on loopback.
async fn replay(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let queue = Arc::new(Mutex::new(VecDeque::from(answers)));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (queue, log) = (queue.clone(), log.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                // The head, then as much body as it announces.
                let head_end = loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                log.lock().unwrap().push(Seen {
                    line: head.lines().next().unwrap_or_default().to_owned(),
                    at: Instant::now(),
                });
                let answer = queue.lock().unwrap().pop_front().expect("an answer left");
                let mut response = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    answer.status,
                    answer.body.len()
                );
                if let Some((limit, remaining, reset)) = answer.rate {
                    response.push_str(&format!(
                        "x-ratelimit-limit: {limit}\r\nx-ratelimit-remaining: {remaining}\r\nx-ratelimit-reset: {reset}\r\n"
                    ));
                }
                response.push_str("\r\n");
                response.push_str(answer.body);
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

fn client(url: &str) -> Client {
    Client::new(
        url,
        SecretString::from("SG.replay"),
        Duration::from_secs(10),
        RetryPolicy::default(),
    )
    .unwrap()
}

const JOB: &str = r#"{"job_id":"d32c6eab-107c-4d26-8428-c8084d9544d3"}"#;

#[tokio::test]
async fn an_upsert_answer_gives_the_job_id_and_no_pause() {
    let (url, seen) = replay(vec![
        Answer {
            status: 202,
            rate: Some((200, 199, 41)),
            body: JOB,
        },
        Answer {
            status: 202,
            rate: Some((200, 198, 40)),
            body: JOB,
        },
    ])
    .await;
    let c = client(&url);
    let body = || bytes::Bytes::from(r#"{"list_ids":[],"contacts":[{"email":"a@example.com"}]}"#);
    assert_eq!(
        c.upsert_contacts(body()).await.unwrap(),
        "d32c6eab-107c-4d26-8428-c8084d9544d3"
    );
    let first = Instant::now();
    c.upsert_contacts(body()).await.unwrap();
    assert!(
        first.elapsed() < Duration::from_secs(5),
        "199 requests left: the reset of 41 is not waited for"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_400_names_the_refused_contact_by_index() {
    let (url, _) = replay(vec![Answer {
        status: 400,
        rate: Some((200, 199, 57)),
        body: r#"{"errors":[{"field":"contacts[0].email","message":"email '000' is not valid"}]}"#,
    }])
    .await;
    let err = client(&url)
        .upsert_contacts(r#"{"list_ids":[],"contacts":[{"email":"000"}]}"#.into())
        .await
        .unwrap_err();
    let ClientError::Rejected { status, errors } = err else {
        panic!("{err:?}")
    };
    assert_eq!(status, 400);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].contact_index(), Some(0));
    assert_eq!(errors[0].message, "email '000' is not valid");
}

#[tokio::test]
async fn field_definitions_with_metadata_and_read_only_reserved_fields_are_read() {
    let (url, _) = replay(vec![Answer {
        status: 200,
        rate: Some((600, 599, 17)),
        body: r#"{"custom_fields":[
            {"id":"e2_T","name":"text_field","field_type":"Text","_metadata":{"self":"https://api.sendgrid.com/v3/marketing/field_definitions/e2_T"}},
            {"id":"e3_N","name":"number_field","field_type":"Number","_metadata":{"self":"https://api.sendgrid.com/v3/marketing/field_definitions/e3_N"}},
            {"id":"e4_D","name":"date_field","field_type":"Date","_metadata":{"self":"https://api.sendgrid.com/v3/marketing/field_definitions/e4_D"}}],
          "reserved_fields":[{"id":"_rf0_T","name":"first_name","field_type":"Text"},
            {"id":"_rf16_D","name":"last_clicked","field_type":"Date","read_only":true}],
          "_metadata":{"self":"https://api.sendgrid.com/v3/marketing/field_definitions"}}"#,
    }])
    .await;
    let defs = client(&url).field_definitions().await.unwrap();
    let types: Vec<(&str, &str, FieldType)> = defs
        .custom_fields
        .iter()
        .map(|d| (d.id.as_str(), d.name.as_str(), d.field_type))
        .collect();
    assert_eq!(
        types,
        [
            ("e2_T", "text_field", FieldType::Text),
            ("e3_N", "number_field", FieldType::Number),
            ("e4_D", "date_field", FieldType::Date)
        ]
    );
}

#[tokio::test]
async fn a_membership_removal_is_accepted_as_a_job() {
    let (url, seen) = replay(vec![Answer {
        status: 202,
        rate: Some((600, 599, 12)),
        body: r#"{"job_id":"a267831e-b2aa-42f5-825e-7305d973a1bc"}"#,
    }])
    .await;
    let job = client(&url)
        .remove_list_contacts(
            "632f6427-3d80-4319-99d3-f90766888351",
            &["fed1e586-b11c-42c9-9ecf-e1f823b71a62".into()],
        )
        .await
        .unwrap();
    assert_eq!(job, "a267831e-b2aa-42f5-825e-7305d973a1bc");
    assert_eq!(
        seen.lock().unwrap()[0].line,
        "DELETE /v3/marketing/lists/632f6427-3d80-4319-99d3-f90766888351/contacts?contact_ids=fed1e586-b11c-42c9-9ecf-e1f823b71a62 HTTP/1.1"
    );
}

/// The recorded headers with the budget spent: the reset counts seconds, so the client
/// holds that family's next request for about that long, and no other family's.
#[tokio::test]
async fn a_spent_budget_with_a_countdown_reset_holds_only_its_family() {
    let (url, seen) = replay(vec![
        Answer {
            status: 202,
            rate: Some((200, 0, 2)),
            body: JOB,
        },
        Answer {
            status: 200,
            rate: Some((600, 598, 16)),
            body: r#"{"id":"632f6427-3d80-4319-99d3-f90766888351","name":"High Value","contact_count":0}"#,
        },
        Answer {
            status: 202,
            rate: Some((200, 199, 60)),
            body: JOB,
        },
    ])
    .await;
    let c = client(&url);
    let body = || bytes::Bytes::from(r#"{"list_ids":[],"contacts":[{"email":"a@example.com"}]}"#);
    c.upsert_contacts(body()).await.unwrap();
    let list = c
        .get_list("632f6427-3d80-4319-99d3-f90766888351")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(list.name, "High Value");
    c.upsert_contacts(body()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let lists_after = seen[1].at.duration_since(seen[0].at);
    let upsert_after = seen[2].at.duration_since(seen[0].at);
    assert!(
        lists_after < Duration::from_millis(1500),
        "the lists family is not held: {lists_after:?}"
    );
    assert!(
        upsert_after >= Duration::from_millis(1900) && upsert_after < Duration::from_secs(4),
        "the contacts family waits the 2 s countdown: {upsert_after:?}"
    );
}

/// A 429 whose reset is far away: the request fails once waiting would pass the budget,
/// and says what to change.
#[tokio::test]
async fn rate_limit_waits_are_bounded_by_time() {
    let (url, seen) = replay(vec![Answer {
        status: 429,
        rate: Some((200, 0, 50)),
        body: r#"{"errors":[{"field":null,"message":"too many requests"}]}"#,
    }])
    .await;
    let c = Client::new(
        &url,
        SecretString::from("SG.replay"),
        Duration::from_secs(10),
        RetryPolicy {
            rate_limit_budget: Duration::from_secs(5),
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = c.scopes().await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(2), "failed at once");
    assert!(
        err.contains("rate limited for 0 s, and SendGrid's next reset is 51 s away: over the 5 s allowed (raise the connection's `rate_limit_wait_secs`"),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}
