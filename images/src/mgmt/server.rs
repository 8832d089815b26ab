//! `POST /v1/checkin`: the body is a postcard [`CheckinRequest`]; the answer is
//! `heartbeat::sign_answer` of a [`Heartbeat`] for the laptop's id and nonce with the
//! server's time and the newest version on file for it, carrying that bundle when it is
//! newer than the version the laptop runs. Every check-in goes into the log.
//!
//! Bounds: a body over [`MAX_REQUEST`] gets 413; a connection that sends nothing for
//! [`READ_TIMEOUT`] is closed; at most [`MAX_IN_FLIGHT`] requests are handled at once
//! (others get 503). Errors are HTTP status codes with a one-line text body.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bulkhead_policy::bundle::signing::SecretKey;
use bulkhead_policy::heartbeat::{CheckinRequest, Heartbeat, MAX_REQUEST, sign_answer};
use tiny_http::{Header, Method, Request, Response};

use super::key::hex;
use super::store::{CheckinEntry, Store};

pub const CHECKIN_PATH: &str = "/v1/checkin";
/// A connection idle this long (headers or body) is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests handled at the same time.
pub const MAX_IN_FLIGHT: usize = 32;

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
pub struct RunningServer {
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl RunningServer {
    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.server.unblock();
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

/// Opens the state directory, binds the address and starts answering.
pub fn start(config: ServerConfig) -> Result<RunningServer, String> {
    let store = Store::open(&config.dir)?;
    store.load_log()?;
    let listener = TcpListener::bind(config.listen).map_err(|e| {
        format!("cannot listen on {}: {e} (another server there? pick another --listen)", config.listen)
    })?;
    // Accepted connections inherit the listener's timeouts (Linux copies them), which
    // tiny_http has no setting for: an idle client cannot hold a thread for long.
    let sock = socket2::SockRef::from(&listener);
    sock.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = Arc::new(tiny_http::Server::from_listener(listener, None).map_err(|e| e.to_string())?);
    let shared = Arc::new(Shared {
        store,
        key: config.key,
        clock: config.clock,
        announce: config.announce,
        log_lock: std::sync::Mutex::new(()),
        in_flight: AtomicUsize::new(0),
    });
    let accept = server.clone();
    let thread = std::thread::spawn(move || {
        for request in accept.incoming_requests() {
            if shared.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = request.respond(text(503, "too many check-ins at once; try again shortly"));
                continue;
            }
            let shared = shared.clone();
            std::thread::spawn(move || {
                handle(&shared, request);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(RunningServer { addr, server, thread: Some(thread) })
}

impl Shared {
    fn say(&self, line: &str) {
        log::info!(target: "mgmt", "{line}");
        if self.announce {
            eprintln!("    {line}");
        }
    }
}

fn text(code: u16, message: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let header = Header::from_bytes("Content-Type", "text/plain; charset=utf-8").expect("a valid header");
    Response::from_string(format!("{message}\n")).with_status_code(code).with_header(header)
}

fn handle(shared: &Shared, mut request: Request) {
    let response = match (request.method(), request.url()) {
        (Method::Post, CHECKIN_PATH) => match read_body(&mut request) {
            Ok(body) => checkin(shared, &body),
            Err(response) => response,
        },
        (_, CHECKIN_PATH) => text(405, "use POST for /v1/checkin"),
        _ => text(404, "unknown path; the check-in endpoint is POST /v1/checkin"),
    };
    let code = response.status_code().0;
    if code != 200 {
        let line = format!("{} {} from {:?}: {code}", request.method(), request.url(), request.remote_addr());
        shared.say(&line);
    }
    let _ = request.respond(response);
}

fn read_body(request: &mut Request) -> Result<Vec<u8>, Response<std::io::Cursor<Vec<u8>>>> {
    if request.body_length().is_some_and(|len| len > MAX_REQUEST) {
        return Err(text(413, &format!("a check-in request is at most {MAX_REQUEST} bytes")));
    }
    let mut body = Vec::new();
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX).saturating_add(1);
    request
        .as_reader()
        .take(limit)
        .read_to_end(&mut body)
        .map_err(|e| text(408, &format!("the request body did not arrive: {e}")))?;
    if body.len() > MAX_REQUEST {
        return Err(text(413, &format!("a check-in request is at most {MAX_REQUEST} bytes")));
    }
    Ok(body)
}

fn checkin(shared: &Shared, body: &[u8]) -> Response<std::io::Cursor<Vec<u8>>> {
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
    let header = Header::from_bytes("Content-Type", "application/octet-stream").expect("a valid header");
    Response::from_data(answer).with_header(header)
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
        server.stop();
    }
}
