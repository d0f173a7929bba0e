//! Requests are rendered to bytes once, before the run, and written as they are.

/// What a request consists of, before rendering.
#[derive(Clone, Debug)]
pub struct RequestSpec<'a> {
    pub method: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// The `Host` header value (host, plus `:port` when not the scheme's default).
    pub host: &'a str,
    /// Extra headers as (name, value); a user-given `Host` or `Content-Length` replaces ours.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Render one request to the exact bytes sent on the wire.
///
/// A `Content-Length` is always sent when there is a body, and for methods that
/// normally carry one (POST, PUT, PATCH) even when it is empty, so that servers
/// never wait for a body that does not come.
pub fn render(spec: &RequestSpec) -> Vec<u8> {
    let has = |name: &str| {
        spec.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let mut out = Vec::with_capacity(128 + spec.body.len());
    out.extend_from_slice(spec.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(spec.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !has("host") {
        push_header(&mut out, "Host", spec.host);
    }
    for (name, value) in spec.headers {
        push_header(&mut out, name, value);
    }
    let wants_length = !spec.body.is_empty() || matches!(spec.method, "POST" | "PUT" | "PATCH");
    if wants_length && !has("content-length") {
        push_header(&mut out, "Content-Length", &spec.body.len().to_string());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(spec.body);
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parse a `Name: value` header given on the command line.
pub fn parse_header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("header {raw:?} has no colon (expected 'Name: value')"))?;
    let name = name.trim();
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name {
        return Err(format!("header {raw:?} has an invalid name"));
    }
    let value = value.trim();
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(format!("header {raw:?} contains a line break"));
    }
    // Sent raw, a control byte corrupts the request or is refused by the server (RFC 9110
    // allows only tabs among them in a field value).
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "header {raw:?} contains a control character (only tabs are allowed in a value)"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        method: &'a str,
        headers: &'a [(String, String)],
        body: &'a [u8],
    ) -> RequestSpec<'a> {
        RequestSpec {
            method,
            path: "/api/generate?x=1",
            host: "localhost:11435",
            headers,
            body,
        }
    }

    #[test]
    fn get_without_body_has_no_content_length() {
        let bytes = render(&spec("GET", &[], b""));
        assert_eq!(
            bytes,
            b"GET /api/generate?x=1 HTTP/1.1\r\nHost: localhost:11435\r\n\r\n"
        );
    }

    #[test]
    fn post_with_body_and_headers() {
        let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        let bytes = render(&spec("POST", &headers, b"{\"a\":1}"));
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text,
            "POST /api/generate?x=1 HTTP/1.1\r\nHost: localhost:11435\r\n\
             Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn empty_post_still_says_its_length() {
        let text = String::from_utf8(render(&spec("POST", &[], b""))).unwrap();
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }

    #[test]
    fn user_host_replaces_ours() {
        let headers = vec![("host".to_string(), "example.test".to_string())];
        let text = String::from_utf8(render(&spec("GET", &headers, b""))).unwrap();
        assert_eq!(text.matches("ost: ").count(), 1, "{text}");
        assert!(text.contains("host: example.test\r\n"));
    }

    #[test]
    fn rendered_request_parses_back() {
        let headers = vec![("X-Test".to_string(), "yes".to_string())];
        let bytes = render(&spec("PUT", &headers, b"hello"));
        let mut hs = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut hs);
        let n = match req.parse(&bytes).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(req.method, Some("PUT"));
        assert_eq!(req.path, Some("/api/generate?x=1"));
        assert_eq!(&bytes[n..], b"hello");
    }

    #[test]
    fn header_parsing() {
        assert_eq!(parse_header("A: b").unwrap(), ("A".into(), "b".into()));
        assert_eq!(parse_header("A:b:c").unwrap(), ("A".into(), "b:c".into()));
        assert_eq!(
            parse_header("X-Empty:").unwrap(),
            ("X-Empty".into(), "".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": value").is_err());
        assert!(parse_header("bad name: v").is_err());
    }
}
