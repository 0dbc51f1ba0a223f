use super::*;

#[test]
fn endpoints() {
    let key = SecretString::from("k");
    let p = RetryPolicy::default();
    let t = Duration::from_secs(1);
    assert_eq!(
        Client::new("global", key.clone(), t, p).unwrap().base_url(),
        GLOBAL
    );
    assert_eq!(Client::new("eu", key.clone(), t, p).unwrap().base_url(), EU);
    assert_eq!(
        Client::new("http://127.0.0.1:9/", key.clone(), t, p)
            .unwrap()
            .base_url(),
        "http://127.0.0.1:9"
    );
    assert!(Client::new("http://[::1]:9", key.clone(), t, p).is_ok());
    let err = Client::new("http://example.com", key.clone(), t, p)
        .err()
        .unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[test]
fn an_endpoint_with_credentials_is_refused_without_echoing_them() {
    let (p, t) = (RetryPolicy::default(), Duration::from_secs(1));
    for endpoint in [
        "http://127.0.0.1@evil.example/",
        "https://user:s3cret@api.sendgrid.com",
    ] {
        let err = Client::new(endpoint, SecretString::from("k"), t, p)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("user name or password"), "{err}");
        assert!(!err.contains("s3cret") && !err.contains("evil"), "{err}");
    }
    let err = Client::new("https://api.sendgrid.com/#x", SecretString::from("k"), t, p)
        .err()
        .unwrap();
    assert!(err.to_string().contains("no query or fragment"), "{err}");
}
