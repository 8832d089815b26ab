//! The one HTTP exchange the agent makes: `POST /v1/checkin` with a binary body over
//! HTTP/1.1 with `Connection: close`, and a bounded reading of the answer.

use alloc::format;
use alloc::vec::Vec;

use smoltcp::wire::Ipv4Address;

/// The request line and headers of an answer may take this much.
pub const MAX_HEAD: usize = 4096;

/// Why an answer is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// No complete header block within [`MAX_HEAD`] bytes.
    HeadTooLong,
    /// Not `HTTP/1.x NNN ...`, or a header that does not parse.
    Malformed,
    /// The body is larger than the caller's bound.
    TooLarge,
    /// The connection closed before the whole body arrived.
    Truncated,
    /// Chunked transfer encoding (the server sends a length).
    Chunked,
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// The request bytes for `body` to the server at `host:port`.
pub fn checkin_request(host: Ipv4Address, port: u16, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v1/checkin HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

/// Parses what arrived so far: `Ok(None)` while more is needed; `closed` says the
/// server closed the connection (then a body without a length ends there). A body of
/// more than `max_body` bytes is an error as soon as that is known.
pub fn parse_response(bytes: &[u8], closed: bool, max_body: usize) -> Result<Option<HttpResponse<'_>>, HttpError> {
    let Some(head_len) = find_head_end(&bytes[..bytes.len().min(MAX_HEAD)]) else {
        return if bytes.len() >= MAX_HEAD {
            Err(HttpError::HeadTooLong)
        } else if closed {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        };
    };
    let head = core::str::from_utf8(&bytes[..head_len]).map_err(|_| HttpError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::Malformed)?;
    let mut words = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (words.next(), words.next()) else { return Err(HttpError::Malformed) };
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(HttpError::Malformed);
    }
    let status: u16 = code.parse().map_err(|_| HttpError::Malformed)?;
    let mut length = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HttpError::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| HttpError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity") {
            return Err(HttpError::Chunked);
        }
    }
    let body = &bytes[head_len..];
    match length {
        Some(n) if n > max_body => Err(HttpError::TooLarge),
        Some(n) if body.len() >= n => Ok(Some(HttpResponse { status, body: &body[..n] })),
        Some(_) if closed => Err(HttpError::Truncated),
        Some(_) => Ok(None),
        None if body.len() > max_body => Err(HttpError::TooLarge),
        None if closed => Ok(Some(HttpResponse { status, body })),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_server_and_the_length() {
        let r = checkin_request(Ipv4Address::new(10, 0, 2, 2), 8470, b"\x01\x02");
        assert_eq!(
            r,
            b"POST /v1/checkin HTTP/1.1\r\nHost: 10.0.2.2:8470\r\nContent-Type: application/octet-stream\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n\x01\x02"
        );
    }

    #[test]
    fn an_answer_is_complete_when_its_length_arrived() {
        let full = b"HTTP/1.1 200 OK\r\nServer: tiny-http\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false, 100), Ok(None), "at {cut}");
        }
        assert_eq!(parse_response(full, false, 100), Ok(Some(HttpResponse { status: 200, body: b"hello" })));
        assert_eq!(parse_response(&full[..full.len() - 1], true, 100), Err(HttpError::Truncated));
        assert_eq!(parse_response(full, false, 4), Err(HttpError::TooLarge));
    }

    #[test]
    fn without_a_length_the_body_ends_with_the_connection() {
        let r = b"HTTP/1.0 404 Not Found\r\n\r\nno such path";
        assert_eq!(parse_response(r, false, 100), Ok(None));
        assert_eq!(parse_response(r, true, 100), Ok(Some(HttpResponse { status: 404, body: b"no such path" })));
        assert_eq!(parse_response(r, false, 3), Err(HttpError::TooLarge));
    }

    #[test]
    fn garbage_and_endless_headers_are_refused() {
        assert_eq!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false, 10), Err(HttpError::Malformed));
        assert_eq!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n", false, 10), Err(HttpError::Malformed));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false, 10),
            Err(HttpError::Malformed)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 10),
            Err(HttpError::Chunked)
        );
        let endless = [b'a'; MAX_HEAD];
        assert_eq!(parse_response(&endless, false, 10), Err(HttpError::HeadTooLong));
        assert_eq!(parse_response(b"HTTP/1.1 200", true, 10), Err(HttpError::Truncated));
    }
}
