//! `POST /v1/checkin`: the body is a postcard [`CheckinRequest`]; the answer is
//! `heartbeat::sign_answer` of a [`Heartbeat`] for the laptop's id and nonce with the
//! server's time and the newest version on file for it, carrying that bundle when it is
//! newer than the version the laptop runs. Every check-in goes into the log.
//!
//! HTTP/1.1 over std's `TcpListener`, requests parsed by `httparse`, one request per
//! connection (`Connection: close`). Bounds: headers up to [`MAX_HEAD`] bytes (431), a
//! body up to [`MAX_REQUEST`] bytes with a `Content-Length` (413, 411); a request must
//! arrive within [`READ_TIMEOUT`] in all (408); at most [`MAX_IN_FLIGHT`] connections
//! are served at once (503 beyond). Errors are status codes with a one-line text body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bulkhead_policy::bundle::signing::SecretKey;
use bulkhead_policy::heartbeat::{CheckinRequest, Heartbeat, MAX_REQUEST, sign_answer};

use super::key::hex;
use super::store::{CheckinEntry, Store};

pub const CHECKIN_PATH: &str = "/v1/checkin";
/// A whole request (headers and body) must arrive within this time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at the same time.
pub const MAX_IN_FLIGHT: usize = 32;
/// Request line and headers.
pub const MAX_HEAD: usize = 8192;
const MAX_HEADERS: usize = 32;

#[derive(Debug)]
pub struct ServerConfig {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub key: SecretKey,
    /// Unix seconds now (the system clock; tests pass their own).
    pub clock: fn() -> u64,
    /// Print one line per request on stderr (the CLI; tests keep quiet).
    pub announce: bool,
}

pub fn system_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A server answering on its own threads until [`RunningServer::stop`].
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.halt();
        }
    }
}

struct Shared {
    store: Store,
    key: SecretKey,
    clock: fn() -> u64,
    announce: bool,
    /// One check-in's read-modify-write of the log at a time.
    log_lock: std::sync::Mutex<()>,
    in_flight: AtomicUsize,
}

impl Shared {
    fn say(&self, line: &str) {
        log::info!(target: "mgmt", "{line}");
        if self.announce {
            eprintln!("    {line}");
        }
    }
}

/// What goes back: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn text(status: u16, message: &str) -> Reply {
    Reply { status, content_type: "text/plain; charset=utf-8", body: format!("{message}\n").into_bytes() }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

fn send(stream: &mut TcpStream, reply: &Reply) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    let _ =
        stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&reply.body)).and_then(|()| stream.flush());
}

/// Opens the state directory, binds the address and starts answering.
pub fn start(config: ServerConfig) -> Result<RunningServer, String> {
    let store = Store::open(&config.dir)?;
    store.load_log()?;
    let listener = TcpListener::bind(config.listen).map_err(|e| {
        format!("cannot listen on {}: {e} (another server there? pick another --listen)", config.listen)
    })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        store,
        key: config.key,
        clock: config.clock,
        announce: config.announce,
        log_lock: std::sync::Mutex::new(()),
        in_flight: AtomicUsize::new(0),
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
            if shared.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                send(&mut stream, &text(503, "too many check-ins at once; try again shortly"));
                continue;
            }
            let shared = shared.clone();
            std::thread::spawn(move || {
                serve_connection(&shared, stream);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(RunningServer { addr, stopping, thread: Some(thread) })
}

/// A request as far as the server needs it.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Reads one request within [`READ_TIMEOUT`]; `Err` is the reply for a bad one, `None`
/// inside it when the peer went away (nothing to answer).
fn read_request(stream: &mut TcpStream) -> Result<Request, Option<Reply>> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut fill = |buf: &mut Vec<u8>| -> Result<(), Option<Reply>> {
        if Instant::now() >= deadline {
            return Err(Some(text(408, "the request did not arrive in time")));
        }
        match stream.read(&mut chunk) {
            Ok(0) => Err(None),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(Some(text(408, "the request did not arrive in time")))
            }
            Err(_) => Err(None),
        }
    };
    let (head_len, method, path, length) = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let mut length = None;
                for h in request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")) {
                    let n: usize = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| Some(text(400, "Content-Length is not a number")))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(Some(text(400, "two different Content-Length headers")));
                    }
                    length = Some(n);
                }
                if request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
                    return Err(Some(text(411, "send the body with a Content-Length, not chunked")));
                }
                let method = request.method.unwrap_or_default().to_string();
                let path = request.path.unwrap_or_default().to_string();
                break (head_len, method, path, length);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => fill(&mut buf)?,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(Some(text(431, &format!("request headers are limited to {MAX_HEAD} bytes"))));
            }
            Err(_) => return Err(Some(text(400, "not an HTTP/1.1 request"))),
        }
    };
    let length = match (method.as_str(), length) {
        ("POST", None) => return Err(Some(text(411, "a check-in needs a Content-Length"))),
        (_, length) => length.unwrap_or(0),
    };
    if length > MAX_REQUEST {
        return Err(Some(text(413, &format!("a check-in request is at most {MAX_REQUEST} bytes"))));
    }
    while buf.len() < head_len + length {
        fill(&mut buf)?;
    }
    let body = buf[head_len..head_len + length].to_vec();
    Ok(Request { method, path, body })
}

fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    let peer = stream.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    let (what, reply) = match read_request(&mut stream) {
        Ok(request) => {
            let reply = match (request.method.as_str(), request.path.as_str()) {
                ("POST", CHECKIN_PATH) => checkin(shared, &request.body),
                (_, CHECKIN_PATH) => text(405, "use POST for /v1/checkin"),
                _ => text(404, "unknown path; the check-in endpoint is POST /v1/checkin"),
            };
            (format!("{} {}", request.method, request.path), reply)
        }
        Err(Some(reply)) => ("a request".to_string(), reply),
        Err(None) => return,
    };
    if reply.status != 200 {
        shared.say(&format!("{what} from {peer}: {} {}", reply.status, reason(reply.status)));
    }
    send(&mut stream, &reply);
}

fn checkin(shared: &Shared, body: &[u8]) -> Reply {
    let Some(req) = CheckinRequest::decode(body) else {
        return text(400, "the body is not a check-in request (postcard CheckinRequest)");
    };
    let now = (shared.clock)();
    let published = match shared.store.bundle_for(&req.device_id, &req.group) {
        Ok(p) => p,
        Err(e) => {
            log::error!(target: "mgmt", "{e}");
            return text(500, "the server's bundle store is damaged; see its log");
        }
    };
    let latest_version = published.as_ref().map_or(req.running_version, |p| p.version.max(req.running_version));
    let bundle = published.filter(|p| p.version > req.running_version);
    let sent = bundle.as_ref().map(|p| p.version);
    let heartbeat = Heartbeat { device_id: req.device_id, nonce: req.nonce, server_time: now, latest_version };
    let answer = sign_answer(&shared.key, &heartbeat, bundle.map(|p| p.bytes));
    let device = hex(&req.device_id);
    let entry = CheckinEntry {
        device: device.clone(),
        group: req.group.clone(),
        version: req.running_version,
        time: now,
        sent,
    };
    let recorded = {
        let _guard = shared.log_lock.lock().unwrap_or_else(|e| e.into_inner());
        shared.store.record(entry)
    };
    if let Err(e) = recorded {
        log::error!(target: "mgmt", "check-in of {device} not recorded: {e}");
        return text(503, "the server cannot record check-ins right now");
    }
    let what = sent.map_or_else(|| "up to date".to_string(), |v| format!("sent v{v}"));
    shared.say(&format!("check-in: {device} group {:?} runs v{}: {what}", req.group, req.running_version));
    Reply { status: 200, content_type: "application/octet-stream", body: answer }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use bulkhead_policy::heartbeat::{Answer, MAX_ANSWER};
    use bulkhead_policy::model::{Policy, Target};

    use super::*;

    pub(crate) fn it_key() -> SecretKey {
        SecretKey([1; 32])
    }

    fn policy(version: u64, target: Target) -> Policy {
        Policy {
            version,
            issued_at: 1_000,
            expires_at: 4_000_000_000,
            target,
            organisation: "Example Corp IT".into(),
            management: None,
            vms: vec![],
            links: vec![],
            hotkeys: vec![],
        }
    }

    pub(crate) fn bundle_for_group(group: &str, version: u64) -> Vec<u8> {
        bulkhead_policy::bundle::signing::sign_policy(&policy(version, Target::Group(group.into())), &it_key(), vec![])
    }

    pub(crate) fn device_bundle(id: [u8; 16], version: u64) -> Vec<u8> {
        bulkhead_policy::bundle::signing::sign_policy(&policy(version, Target::Device(id)), &it_key(), vec![])
    }

    fn server_key() -> SecretKey {
        SecretKey([2; 32])
    }

    fn serve(dir: &std::path::Path) -> RunningServer {
        start(ServerConfig {
            dir: dir.into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            key: server_key(),
            clock: || 1_234,
            announce: false,
        })
        .unwrap()
    }

    fn post(server: &RunningServer, body: &[u8]) -> Result<Vec<u8>, (u16, String)> {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let mut response =
            agent.post(&format!("http://{}{CHECKIN_PATH}", server.addr)).send(body).map_err(|e| (0, e.to_string()))?;
        let status = response.status().as_u16();
        let bytes = response.body_mut().with_config().limit(MAX_ANSWER as u64).read_to_vec().unwrap();
        if status == 200 { Ok(bytes) } else { Err((status, String::from_utf8_lossy(&bytes).into_owned())) }
    }

    fn request(version: u64, nonce: u8) -> Vec<u8> {
        CheckinRequest { device_id: [7; 16], group: "staff".into(), running_version: version, nonce: [nonce; 16] }
            .encode()
            .unwrap()
    }

    #[test]
    fn a_laptop_behind_gets_the_newer_bundle_signed_for_its_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path());
        let store = Store::open(dir.path()).unwrap();
        let v2 = bundle_for_group("staff", 2);
        store.publish(&v2).unwrap();

        let answer = Answer::decode(&post(&server, &request(1, 9)).unwrap()).unwrap();
        let heartbeat = answer.verify(&server_key().public(), &[7; 16], &[9; 16]).unwrap();
        assert_eq!((heartbeat.server_time, heartbeat.latest_version), (1_234, 2));
        assert_eq!(answer.bundle.as_deref(), Some(&v2[..]));
        assert!(answer.verify(&server_key().public(), &[7; 16], &[8; 16]).is_err(), "bound to the nonce");

        // Once on v2, the laptop only gets a heartbeat.
        let answer = Answer::decode(&post(&server, &request(2, 3)).unwrap()).unwrap();
        assert_eq!(answer.bundle, None);
        assert_eq!(answer.verify(&server_key().public(), &[7; 16], &[3; 16]).unwrap().latest_version, 2);

        let log = store.load_log().unwrap();
        let record = &log.devices[&hex(&[7; 16])];
        assert_eq!((record.version, record.last_sent, record.checkins), (2, Some(2), 2));
        assert_eq!(log.recent.iter().map(|e| e.sent).collect::<Vec<_>>(), vec![Some(2), None]);
        server.stop();
    }

    #[test]
    fn bad_requests_get_status_codes_and_are_not_logged() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path());
        assert_eq!(post(&server, b"not postcard").unwrap_err().0, 400);
        let mut long = request(1, 1);
        long.resize(MAX_REQUEST + 1, 0);
        assert_eq!(post(&server, &long).unwrap_err().0, 413);
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let get = agent.get(&format!("http://{}{CHECKIN_PATH}", server.addr)).call().unwrap();
        assert_eq!(get.status().as_u16(), 405);
        let other = agent.get(&format!("http://{}/", server.addr)).call().unwrap();
        assert_eq!(other.status().as_u16(), 404);
        assert!(Store::open(dir.path()).unwrap().load_log().unwrap().devices.is_empty());
        server.stop();
    }

    #[test]
    fn a_client_that_stops_sending_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path());
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream.write_all(b"POST /v1/checkin HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nabc").unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT * 3)).unwrap();
        let started = std::time::Instant::now();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        let waited = started.elapsed();
        assert!(waited >= READ_TIMEOUT / 2 && waited < READ_TIMEOUT * 2, "closed after {waited:?}");
        assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 408 "), "{reply:?}");
        // The server still takes check-ins after an idle stretch longer than the timeout.
        assert!(post(&server, &request(1, 1)).is_ok());
        server.stop();
    }
}
