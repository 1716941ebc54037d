use super::limits::{STALLED_AFTER, backoff, retry_after};
use super::*;

#[test]
fn next_link_is_found() {
    let h = r#"<https://api.github.com/orgs/x/repos?page=2>; rel="next", <https://api.github.com/orgs/x/repos?page=5>; rel="last""#;
    assert_eq!(
        next_link(Some(h)).as_deref(),
        Some("https://api.github.com/orgs/x/repos?page=2")
    );
    let last = r#"<https://x/?page=1>; rel="prev", <https://x/?page=1>; rel="first""#;
    assert_eq!(next_link(Some(last)), None);
    assert_eq!(next_link(None), None);
}

#[test]
fn shown_urls_drop_queries() {
    assert_eq!(shown("https://h/a/b?token=secret"), "/a/b");
}

#[test]
fn retry_after_takes_seconds_and_dates() {
    assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
    let soon = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
    let soon = soon.replace("+0000", "GMT");
    let wait = retry_after(&soon).expect("an HTTP date");
    assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    assert_eq!(
        retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after("soon"), None);
}

#[test]
fn backoff_is_jittered_within_bounds() {
    for attempt in 1..8 {
        let d = backoff(attempt).as_millis() as u64;
        let full = 250 * 2u64.pow(attempt.min(6));
        assert!(d >= full / 2 && d <= full, "{attempt}: {d}");
    }
}

#[test]
fn credentials_go_to_the_api_origin_only() {
    let api = ApiClient::new(
        "https://api.example.com/v3",
        None,
        "application/json",
        Vec::new(),
        None,
        &HttpSettings::default(),
    )
    .expect("a client");
    assert!(api.is_api_origin("https://api.example.com/repos?page=2"));
    assert!(api.is_api_origin("https://api.example.com:443/x"));
    assert!(!api.is_api_origin("http://api.example.com/x"));
    assert!(!api.is_api_origin("https://api.example.com:8443/x"));
    assert!(!api.is_api_origin("https://example.com/x"));
    assert!(!api.is_api_origin("file:///etc/passwd"));
    let mut guard = api.pages("https://api.example.com/list");
    guard
        .visit("https://api.example.com/list", &api)
        .expect("page 1");
    guard
        .visit("https://api.example.com/list?page=2", &api)
        .expect("page 2");
    let looped = guard.visit("https://api.example.com/list", &api);
    assert!(looped.is_err_and(|e| e.to_string().contains("loops")));
    let foreign = guard.visit("https://evil.example.net/list", &api);
    assert!(foreign.is_err_and(|e| e.to_string().contains("another origin")));
}

/// An HTTP/1.1 answer with `headers` (each ending in CRLF) and `body`.
fn raw_answer(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A tiny server on `host`: answers each connection with `answer(its origin)` and sends
/// back the raw requests it received.
fn serve(
    host: &str,
    answer: impl FnOnce(&str) -> String,
) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind((host, 0)).expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("address"));
    let answer = answer(&origin);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (origin, rx)
}

/// Every provider's way of carrying credentials (Bearer, Gitea's `token`, GitLab's
/// `PRIVATE-TOKEN`, Bitbucket's Basic) stays on the API's origin across a redirect.
#[test]
fn no_credential_header_follows_a_redirect_to_another_origin() {
    let secret = SecretString::from("s3cr3t-token-value");
    for auth in [
        Auth::scheme("Bearer", &secret),
        Auth::scheme("token", &secret),
        Auth::header("PRIVATE-TOKEN", &secret),
        Auth::basic("alice", &secret),
    ] {
        let (foreign, seen_foreign) = serve("127.0.0.2", |_| raw_answer("200 OK", "", "ok"));
        let location = format!("Location: {foreign}/signed\r\n");
        let (home, seen_home) = serve("127.0.0.1", |_| raw_answer("302 Found", &location, ""));
        let mut api = ApiClient::new(
            &home,
            Some(auth.clone()),
            "application/json",
            Vec::new(),
            None,
            &HttpSettings::default(),
        )
        .expect("a client");
        // An asset may be fetched from the other origin, without the credential.
        let mut bytes = Vec::new();
        api.download(&format!("{home}/asset"), &mut |r| {
            r.read_to_end(&mut bytes)
                .map(|_| ())
                .map_err(|e| ProviderError::Store(e.to_string()))
        })
        .expect("the download");
        assert_eq!(bytes, b"ok");
        let name = auth.name.to_ascii_lowercase();
        let home_request = seen_home.recv().expect("a request at home");
        assert!(home_request.to_ascii_lowercase().contains(&name));
        let foreign_request = seen_foreign.recv().expect("a request elsewhere");
        assert!(
            !foreign_request.to_ascii_lowercase().contains(&name),
            "{foreign_request}"
        );
        assert!(!auth.scrub(&foreign_request).contains("***"));
        // An API answer may not come from there at all.
        let refused = api.get(&format!("{home}/list"));
        assert!(
            matches!(refused, Err(ProviderError::Refused(_))),
            "{:?}",
            refused.err()
        );
        assert!(seen_foreign.try_recv().is_err());
    }
}

/// A server that accepts connections and never answers: each request ends at the read
/// timeout, and after `STALLED_AFTER` of them in a row the origin is not asked again.
#[test]
fn a_hung_api_is_given_up_after_a_few_timeouts() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let home = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let settings = HttpSettings {
        read_timeout: 1,
        retries: 0,
        ..HttpSettings::default()
    };
    let mut api = ApiClient::new(&home, None, "application/json", Vec::new(), None, &settings)
        .expect("a client");
    for _ in 0..STALLED_AFTER {
        let started = Instant::now();
        let e = api.get(&format!("{home}/x")).err().expect("a timeout");
        assert!(e.to_string().contains("read timeout (1 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let started = Instant::now();
    let e = api.get(&format!("{home}/y")).err().expect("given up");
    assert!(e.to_string().contains("stopped answering"), "{e}");
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// The HTTP cache keeps answers up to `max_cached_bytes`; larger ones are fetched again
/// next time instead of growing the index.
#[test]
fn only_small_answers_are_cached() {
    #[derive(Default)]
    struct Memory(std::sync::Mutex<std::collections::HashMap<String, CachedAnswer>>);
    impl HttpCache for Memory {
        fn cached(&self, url: &str) -> Result<Option<CachedAnswer>, CacheError> {
            let map = self.0.lock().map_err(|e| CacheError(e.to_string()))?;
            Ok(map.get(url).cloned())
        }
        fn store(&self, url: &str, answer: &CachedAnswer) -> Result<(), CacheError> {
            let mut map = self.0.lock().map_err(|e| CacheError(e.to_string()))?;
            map.insert(url.to_string(), answer.clone());
            Ok(())
        }
    }
    let index = Memory::default();
    let answer = |size: usize| {
        let body = format!("[\"{}\"]", "x".repeat(size));
        raw_answer("200 OK", &format!("ETag: \"e{size}\"\r\n"), &body)
    };
    let settings = HttpSettings {
        max_cached_bytes: 10_000,
        ..HttpSettings::default()
    };
    for (size, kept) in [(1_000, true), (20_000, false)] {
        let (home, _seen) = serve("127.0.0.1", |_| answer(size));
        let mut api = ApiClient::new(
            &home,
            None,
            "application/json",
            Vec::new(),
            Some(&index),
            &settings,
        )
        .expect("a client");
        let url = format!("{home}/list");
        let page = api.get(&url).expect("the answer");
        assert_eq!(page.body.len(), size + 4);
        let cached = index.cached(&url).expect("the cache");
        assert_eq!(cached.is_some(), kept, "{size} bytes");
    }
}

/// A list's pages together may not pass `max_list_bytes`: they are held in memory at once.
#[test]
fn a_list_is_bounded_as_a_whole() {
    let (home, _seen) = serve("127.0.0.1", |origin| {
        let body = format!("[\"{}\"]", "x".repeat(996));
        let link = format!("Link: <{origin}/list?page=2>; rel=\"next\"\r\n");
        raw_answer("200 OK", &link, &body)
    });
    let settings = HttpSettings {
        max_list_bytes: 1_500,
        ..HttpSettings::default()
    };
    let mut api = ApiClient::new(&home, None, "application/json", Vec::new(), None, &settings)
        .expect("a client");
    let e = api.get_all(&format!("{home}/list")).expect_err("too large");
    assert!(e.to_string().contains("the whole list"), "{e}");
    assert!(e.to_string().contains("1500 bytes"), "{e}");
}
