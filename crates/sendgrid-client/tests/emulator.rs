//! The client against the emulator over HTTP on loopback: each endpoint, SendGrid's
//! error answers, and the retry loop.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use secrecy::SecretString as ApiKey;
use sendgrid_client::{Client, ClientError, FieldType, RetryPolicy, has_marketing_access};
use sendgrid_emulator::{Config, Emulator, Fault, Faults, KeyConfig, marketing_scopes};

const LIST: &str = "0b7c2a53-0a0f-4c35-9a3e-0f6f1d8f3a11";

fn fast() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

async fn emulator(import_delay_ms: u64) -> Emulator {
    Emulator::start(Config {
        keys: vec![
            KeyConfig {
                key: "good".into(),
                scopes: marketing_scopes(),
            },
            KeyConfig {
                key: "mail-only".into(),
                scopes: vec!["mail.send".into()],
            },
        ],
        import_delay_ms,
        lists: vec![(LIST.into(), "news".into())],
        custom_fields: vec![("ltv".into(), "Number".into())],
        ..Config::default()
    })
    .await
    .unwrap()
}

fn client(e: &Emulator, key: &str) -> Client {
    Client::new(&e.url(), ApiKey::from(key), Duration::from_secs(2), fast()).unwrap()
}

fn body(contacts: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"list_ids":["{LIST}"],"contacts":[{contacts}]}}"#
    ))
}

#[tokio::test]
async fn upsert_then_follow_the_job_to_completion() {
    let e = emulator(1500).await;
    let c = client(&e, "good");
    let ltv_id = c.field_definitions().await.unwrap().custom_fields[0]
        .id
        .clone();
    let job = c
        .upsert_contacts(body(&format!(
            r#"{{"email":"Ada@Example.com","first_name":"Ada","custom_fields":{{"{ltv_id}":12.5}}}},{{"email":"b@example.com"}}"#
        )))
        .await
        .unwrap();
    let first = c.import_status(&job).await.unwrap();
    assert_eq!(first.status, "pending");
    assert_eq!(first.job_type, "upsert_contacts");
    assert_eq!(
        first.results.requested_count, 2.0,
        "counts are filled while pending"
    );
    assert!(
        e.list_emails(LIST).is_empty(),
        "nothing lands before the job ends"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let done = loop {
        let status = c.import_status(&job).await.unwrap();
        if status.finished() || tokio::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.status, "completed");
    assert_eq!(done.results.created_count, 2.0);
    assert_eq!(e.list_emails(LIST), ["ada@example.com", "b@example.com"]);
    let state = e.inspect();
    assert_eq!(
        state["lists"][LIST]["contacts"][0]["custom_fields"]["ltv"],
        12.5
    );
    assert_eq!(c.get_list(LIST).await.unwrap().unwrap().contact_count, 2);
}

#[tokio::test]
async fn bad_key_and_missing_permissions() {
    let e = emulator(0).await;
    assert!(matches!(
        client(&e, "wrong")
            .upsert_contacts(body(r#"{"email":"a@b.co"}"#))
            .await,
        Err(ClientError::Unauthorized { .. })
    ));
    let restricted = client(&e, "mail-only");
    assert!(matches!(
        restricted
            .upsert_contacts(body(r#"{"email":"a@b.co"}"#))
            .await,
        Err(ClientError::Forbidden { .. })
    ));
    let scopes = restricted.scopes().await.unwrap();
    assert!(!has_marketing_access(&scopes));
    assert!(has_marketing_access(
        &client(&e, "good").scopes().await.unwrap()
    ));
    assert!(e.list_emails(LIST).is_empty());
}

#[tokio::test]
async fn validation_errors_name_the_contact_and_field() {
    let e = emulator(0).await;
    let c = client(&e, "good");
    let long = "x".repeat(51);
    let err = c
        .upsert_contacts(body(&format!(r#"{{"email":"a@b.co"}},{{"email":"c@d.co","first_name":"{long}"}},{{"email":"e@f.co","custom_fields":{{"w9":1}}}}"#)))
        .await
        .unwrap_err();
    let ClientError::Rejected { status, errors } = err else {
        panic!("{err}")
    };
    assert_eq!(status, 400);
    let named: Vec<(Option<usize>, String)> = errors
        .iter()
        .map(|e| (e.contact_index(), e.field.clone().unwrap()))
        .collect();
    assert_eq!(
        named,
        [
            (Some(1), "contacts[1].first_name".to_string()),
            (Some(2), "contacts[2].custom_fields.w9".to_string())
        ]
    );
    let too_big = format!(
        r#"{{"email":"a@b.co","address_line_1":"{}"}}"#,
        "y".repeat(6_000_000)
    );
    assert!(matches!(
        c.upsert_contacts(body(&too_big)).await,
        Err(ClientError::Rejected { status: 413, .. })
    ));
    let bad_list = Bytes::from(r#"{"list_ids":["nope"],"contacts":[{"email":"a@b.co"}]}"#);
    assert!(matches!(
        c.upsert_contacts(bad_list).await,
        Err(ClientError::Rejected { status: 400, .. })
    ));
}

#[tokio::test]
async fn transient_failures_are_retried_and_429_waits_for_the_reset() {
    let e = emulator(0).await;
    e.script(Faults {
        upserts: vec![
            Fault::Status { status: 503 },
            Fault::Drop,
            Fault::Status { status: 429 },
            Fault::Status { status: 500 },
        ]
        .into(),
        ..Faults::default()
    });
    let c = client(&e, "good");
    c.upsert_contacts(body(r#"{"email":"a@b.co"}"#))
        .await
        .unwrap();
    let stats = c.stats();
    assert_eq!(stats.retries, 3);
    assert_eq!(stats.rate_limited, 1);
    let statuses: Vec<u16> = e.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 0, 429, 500, 202]);
}

#[tokio::test]
async fn retries_are_bounded() {
    let e = emulator(0).await;
    e.script(Faults {
        upserts: vec![Fault::Status { status: 502 }; 10].into(),
        ..Faults::default()
    });
    let c = Client::new(
        &e.url(),
        ApiKey::from("good"),
        Duration::from_secs(2),
        RetryPolicy {
            max_attempts: 3,
            ..fast()
        },
    )
    .unwrap();
    let err = c
        .upsert_contacts(body(r#"{"email":"a@b.co"}"#))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("failed after 3 attempts: HTTP 502"),
        "{err}"
    );
}

#[tokio::test]
async fn an_https_endpoint_that_answers_plain_http_fails_at_once_and_says_so() {
    let e = emulator(0).await;
    let https = e.url().replacen("http://", "https://", 1);
    let c = Client::new(&https, ApiKey::from("good"), Duration::from_secs(2), fast()).unwrap();
    let err = c.all_lists().await.unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "reading the lists: the TLS handshake with {https} failed (received corrupt message \
             of type InvalidContentType): it does not answer in TLS; an address that serves \
             plain HTTP (a local emulator or proxy on a loopback address) is written `http://`"
        )
    );
    assert_eq!(c.stats().retries, 0);
}

/// A TLS server on loopback whose self-signed certificate no trust store holds; it
/// takes connections until the test ends.
async fn untrusted_tls_server() -> String {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{ServerConfig, crypto::ring};
    let cert = CertificateDer::from(include_bytes!("fixtures/self-signed.crt.der").to_vec());
    let key = PrivatePkcs8KeyDer::from(include_bytes!("fixtures/self-signed.key.der").to_vec());
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], PrivateKeyDer::Pkcs8(key))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.accept(stream).await });
        }
    });
    format!("https://127.0.0.1:{port}")
}

#[tokio::test]
async fn an_endpoint_whose_certificate_is_not_trusted_fails_at_once_and_says_so() {
    let url = untrusted_tls_server().await;
    let c = Client::new(&url, ApiKey::from("good"), Duration::from_secs(2), fast()).unwrap();
    let err = c.all_lists().await.unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "reading the lists: the TLS handshake with {url} failed (invalid peer certificate"
        )),
        "{message}"
    );
    assert!(
        message.ends_with(
            "its certificate is not one this machine trusts: check the endpoint's host name, \
             or add the authority that signed the certificate (a company proxy's, say) to the \
             system's trust store"
        ),
        "{message}"
    );
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test]
async fn timeouts_are_retried() {
    let e = emulator(0).await;
    e.script(Faults {
        upserts: vec![Fault::Delay { ms: 1500 }].into(),
        ..Faults::default()
    });
    let c = Client::new(
        &e.url(),
        ApiKey::from("good"),
        Duration::from_millis(500),
        fast(),
    )
    .unwrap();
    c.upsert_contacts(body(r#"{"email":"a@b.co"}"#))
        .await
        .unwrap();
    assert_eq!(c.stats().retries, 1);
}

#[tokio::test]
async fn lists_fields_search_and_membership_removal() {
    let e = emulator(0).await;
    let c = client(&e, "good");
    assert!(
        c.get_list("11111111-2222-3333-4444-555555555555")
            .await
            .unwrap()
            .is_none()
    );
    let created = c.create_list("weekly").await.unwrap();
    assert_eq!(created.id.len(), 36);
    let field = c.create_field("tier", FieldType::Text).await.unwrap();
    assert_eq!(field.field_type, FieldType::Text);
    c.upsert_contacts(body(r#"{"email":"a@b.co"},{"email":"c@d.co"}"#))
        .await
        .unwrap();
    let found = c
        .search_emails(&["a@b.co".into(), "zz@y.co".into()])
        .await
        .unwrap();
    assert!(found[0].1.is_some());
    assert_eq!(found[1].1, None);
    c.remove_list_contacts(LIST, &[found[0].1.clone().unwrap()])
        .await
        .unwrap();
    assert_eq!(e.list_emails(LIST), ["c@d.co"]);
    // Membership only: the contact still exists.
    assert_eq!(e.inspect()["contacts"], 2);
}

#[tokio::test]
async fn the_client_slows_down_when_the_rate_budget_is_spent() {
    let e = Emulator::start(Config {
        keys: vec![KeyConfig {
            key: "good".into(),
            scopes: marketing_scopes(),
        }],
        rate_limits: Some(sendgrid_emulator::RateLimits::uniform(2, 1000)),
        lists: vec![(LIST.into(), "news".into())],
        ..Config::default()
    })
    .await
    .unwrap();
    let c = client(&e, "good");
    for i in 0..5 {
        c.upsert_contacts(body(&format!(r#"{{"email":"c{i}@example.com"}}"#)))
            .await
            .unwrap();
    }
    // Waiting for the reset whenever Remaining reached 0 means no request was refused.
    assert_eq!(c.stats().rate_limited, 0);
    assert!(e.requests().iter().all(|r| r.status == 202));
    assert_eq!(e.list_emails(LIST).len(), 5);
}

#[tokio::test]
async fn a_share_of_jobs_fails_when_asked() {
    let e = Emulator::start(Config {
        keys: vec![KeyConfig {
            key: "good".into(),
            scopes: marketing_scopes(),
        }],
        lists: vec![(LIST.into(), "news".into())],
        fail_one_job_in: 3,
        ..Config::default()
    })
    .await
    .unwrap();
    let c = client(&e, "good");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let job = c
            .upsert_contacts(body(&format!(r#"{{"email":"c{i}@example.com"}}"#)))
            .await
            .unwrap();
        statuses.push(c.import_status(&job).await.unwrap().status);
    }
    assert_eq!(
        statuses,
        [
            "completed",
            "completed",
            "failed",
            "completed",
            "completed",
            "failed"
        ]
    );
    assert_eq!(e.list_emails(LIST).len(), 4);
}

#[tokio::test]
async fn custom_field_names_are_unique_whatever_their_case_and_follow_the_rules() {
    let e = emulator(0).await;
    let c = client(&e, "good");
    c.create_field("Lifetime_Value", FieldType::Number)
        .await
        .unwrap();
    for (name, why) in [
        ("lifetime_value", "a field with this name exists"),
        ("1st_order", "must start with a letter or underscore"),
        ("tier-name", "must start with a letter or underscore"),
        ("EMAIL", "is a reserved field name"),
    ] {
        let err = c.create_field(name, FieldType::Text).await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Rejected { status: 400, .. })
                && err.to_string().contains(why),
            "{name}: {err}"
        );
    }
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_is_named_when_the_retries_run_out() {
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let c = Client::new(&base, ApiKey::from("good"), Duration::from_secs(2), fast()).unwrap();
    let err = c.field_definitions().await.unwrap_err();
    let ClientError::Exhausted { attempts, last, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*attempts, RetryPolicy::default().max_attempts);
    assert!(
        last.starts_with(&format!("could not connect to {base} (")),
        "{last}"
    );
}
