//! Network discovery of cameras (Sentinel's `POST /cameras/discover`): probe the ports of exactly
//! the hosts a request names, or of the addresses of one small CIDR, and keep those that answer
//! RTSP or HTTP.
//!
//! Nothing here broadcasts, multicasts (no ONVIF WS-Discovery) or scans beyond the request: the
//! addresses probed are the hosts given (a host name stands for the addresses it resolves to), or
//! the hosts of the CIDR without its network and broadcast addresses, 256 at most in all.
//!
//! A probe is a TCP connection, then a short exchange, each step bounded by the request's timeout:
//!
//! - on an RTSP port (554, 8554) `OPTIONS rtsp://ip:port/ RTSP/1.0`, recognized by an
//!   `RTSP/1.0` reply;
//! - on an HTTP port (80, 8080) `GET / HTTP/1.0`, recognized by an `HTTP/1.x` reply, whose
//!   content type tells whether it serves JPEG images (an MJPEG stream or a snapshot);
//! - on any other port, the RTSP `OPTIONS` first: an `RTSP/1.0` reply makes it RTSP; an `HTTP/1.x`
//!   reply (most web servers answer an unknown method with a 400 or a 405) makes it HTTP, and then
//!   a second connection sends the `GET /` above to learn its content type, the first reply's
//!   headers standing when that second exchange fails.
//!
//! Only the headers are read (4 KiB at most), so an endless MJPEG stream ends the probe as soon as
//! its headers are in. A port that accepts but answers neither protocol is left out.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use ipnet::IpNet;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The ports probed when a request names none: RTSP 554 and 8554, HTTP 80 and 8080. Tests pass
/// their own ports (listeners bound to port 0 on 127.0.0.1), never these.
pub const DEFAULT_PORTS: [u16; 4] = [554, 8554, 80, 8080];
/// The timeout of each step of a probe when a request names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// The bounds of a request's `timeout_ms`.
pub const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 50..=5000;
/// The most addresses one request probes, and the most hosts it may list.
pub const MAX_ADDRESSES: usize = 256;
/// The most ports one request probes.
pub const MAX_PORTS: usize = 16;
/// How many probes run at once.
pub const CONCURRENCY: usize = 64;
/// The most bytes read of a reply's status line and headers.
const MAX_HEADER_BYTES: usize = 4096;

/// A host as a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A host name, probed at the addresses it resolves to (none when it does not resolve).
    Name(String),
}

/// What a request probes: the hosts it lists, or one CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    Hosts(Vec<Host>),
    Cidr(IpNet),
}

/// A valid discovery request: see [`DiscoveryRequest::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryRequest {
    pub targets: Targets,
    /// `None`: [`DEFAULT_PORTS`].
    pub ports: Option<Vec<u16>>,
    /// The bound of each step of a probe: connecting, sending, reading the reply's headers.
    pub timeout: Duration,
}

/// A camera found: an address and port that answered RTSP or HTTP (Sentinel's
/// `CameraDiscoveryResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredCamera {
    pub ip: String,
    pub port: u16,
    /// `"rtsp"` or `"http"`.
    pub protocol: &'static str,
    /// A suggested source URL: `rtsp://ip:port/` or `http://ip:port/`.
    pub url: String,
    /// The maker, when the `Server` header names one this module knows.
    pub manufacturer: Option<String>,
    /// The model, when the `Server` header gives one after a known maker's name.
    pub model: Option<String>,
    /// The `Server` header as received.
    pub server: Option<String>,
    /// Whether `GET /` answered JPEG images: `multipart/x-mixed-replace` (MJPEG) or `image/jpeg`.
    pub mjpeg: bool,
    /// From the start of the connection to the first reply's headers.
    pub response_time_ms: u64,
    /// Always true: only reachable cameras are returned.
    pub reachable: bool,
}

type FieldErrors = Vec<(String, String)>;

impl DiscoveryRequest {
    /// Reads a request from its fields as received, reporting every invalid field at once, each
    /// as (field, message): `hosts` (or `hosts[i]` for one entry), `cidr`, `ports` (or
    /// `ports[i]`), `timeout_ms`.
    pub fn parse(
        hosts: Option<Vec<String>>,
        cidr: Option<String>,
        ports: Option<Vec<u16>>,
        timeout_ms: Option<u64>,
    ) -> Result<DiscoveryRequest, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut refuse = |field: &str, message: String| errors.push((field.to_owned(), message));

        match (&hosts, &cidr) {
            (None, None) => refuse("hosts", "give either a list of hosts or a cidr".into()),
            (Some(_), Some(_)) => refuse(
                "cidr",
                "give either a list of hosts or a cidr, not both".into(),
            ),
            _ => {}
        }

        let hosts = hosts.map(|list| parse_hosts(&list, &mut refuse));
        let cidr = cidr.and_then(|text| parse_cidr(&text, &mut refuse));

        let ports = ports.map(|list| {
            if list.is_empty() {
                refuse(
                    "ports",
                    "give at least one port, or none for the defaults".into(),
                );
            }
            if list.len() > MAX_PORTS {
                refuse("ports", format!("at most {MAX_PORTS} ports"));
            }
            for (i, port) in list.iter().enumerate() {
                if *port == 0 {
                    refuse(
                        &format!("ports[{i}]"),
                        "a port is between 1 and 65535".into(),
                    );
                }
            }
            let unique: BTreeSet<u16> = list.into_iter().collect();
            unique.into_iter().collect::<Vec<_>>()
        });

        let timeout = match timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if TIMEOUT_MS.contains(&ms) => Duration::from_millis(ms),
            Some(_) => {
                refuse(
                    "timeout_ms",
                    format!(
                        "between {} and {} milliseconds",
                        TIMEOUT_MS.start(),
                        TIMEOUT_MS.end()
                    ),
                );
                DEFAULT_TIMEOUT
            }
        };

        if !errors.is_empty() {
            return Err(errors);
        }
        let targets = match (hosts, cidr) {
            (Some(hosts), None) => Targets::Hosts(hosts),
            (None, Some(cidr)) => Targets::Cidr(cidr),
            _ => unreachable!("one of hosts and cidr was checked above"),
        };
        Ok(DiscoveryRequest {
            targets,
            ports,
            timeout,
        })
    }

    /// The ports probed: the request's, or [`DEFAULT_PORTS`].
    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone().unwrap_or_else(|| DEFAULT_PORTS.to_vec())
    }

    /// The addresses probed, in order, without duplicates, [`MAX_ADDRESSES`] at most: the hosts'
    /// (a name resolved with the system's resolver, keeping only the addresses a probe may
    /// target), or the CIDR's hosts. Errs with a `hosts[i]` error for each name that resolves to
    /// nothing probeable, so that a caller may refuse the request before discovering.
    pub async fn resolve(&self) -> Result<Vec<IpAddr>, FieldErrors> {
        let (addresses, errors) = self.addresses().await;
        if errors.is_empty() {
            Ok(addresses)
        } else {
            Err(errors)
        }
    }

    async fn addresses(&self) -> (Vec<IpAddr>, FieldErrors) {
        let mut errors = FieldErrors::new();
        let mut seen = BTreeSet::new();
        let mut addresses = Vec::new();
        let mut keep = |ip: IpAddr| {
            if seen.len() < MAX_ADDRESSES && probeable(ip) && seen.insert(ip) {
                addresses.push(ip);
            }
        };
        match &self.targets {
            Targets::Cidr(net) => cidr_hosts(net).into_iter().for_each(&mut keep),
            Targets::Hosts(hosts) => {
                for (i, host) in hosts.iter().enumerate() {
                    match host {
                        Host::Ip(ip) => keep(*ip),
                        Host::Name(name) => {
                            let resolved: Vec<IpAddr> =
                                match tokio::net::lookup_host((name.as_str(), 0)).await {
                                    Ok(found) => {
                                        found.map(|a| a.ip()).filter(|ip| probeable(*ip)).collect()
                                    }
                                    Err(_) => Vec::new(),
                                };
                            if resolved.is_empty() {
                                errors.push((
                                    format!("hosts[{i}]"),
                                    format!("`{name}` does not resolve to an address to probe"),
                                ));
                            }
                            resolved.into_iter().for_each(&mut keep);
                        }
                    }
                }
            }
        }
        (addresses, errors)
    }
}

fn parse_hosts(list: &[String], refuse: &mut impl FnMut(&str, String)) -> Vec<Host> {
    if list.is_empty() {
        refuse("hosts", "give at least one host".into());
    }
    if list.len() > MAX_ADDRESSES {
        refuse("hosts", format!("at most {MAX_ADDRESSES} hosts"));
    }
    let mut hosts: Vec<Host> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let field = format!("hosts[{i}]");
        let text = entry.trim();
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        let host = if let Ok(ip) = IpAddr::from_str(bare) {
            if !probeable(ip) {
                refuse(
                    &field,
                    format!(
                        "`{text}` is not a single host's address (multicast, broadcast or unspecified)"
                    ),
                );
                continue;
            }
            Host::Ip(ip)
        } else if is_host_name(text) {
            Host::Name(text.to_ascii_lowercase())
        } else {
            refuse(
                &field,
                format!("`{text}` is neither an IP address nor a host name"),
            );
            continue;
        };
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

fn parse_cidr(text: &str, refuse: &mut impl FnMut(&str, String)) -> Option<IpNet> {
    let Ok(net) = IpNet::from_str(text.trim()) else {
        refuse(
            "cidr",
            format!("`{}` is not a CIDR such as 192.168.1.0/24", text.trim()),
        );
        return None;
    };
    let net = net.trunc();
    let smallest_prefix = match net {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 120,
    };
    if net.prefix_len() < smallest_prefix {
        refuse(
            "cidr",
            format!(
                "{net} is too large: at most a /24 for IPv4, a /120 for IPv6 ({MAX_ADDRESSES} addresses)"
            ),
        );
        return None;
    }
    if net.network().is_multicast() || net.network().is_unspecified() {
        refuse("cidr", format!("{net} is not a network of hosts"));
        return None;
    }
    Some(net)
}

/// The addresses of a CIDR a probe may target: all but the network and broadcast addresses (for
/// IPv6 too: the first, the subnet-router anycast, and the last), except in a /31 or /32 (/127 or
/// /128) which have none.
fn cidr_hosts(net: &IpNet) -> Vec<IpAddr> {
    let all: Vec<IpAddr> = match net {
        IpNet::V4(v4) => v4.hosts().map(IpAddr::V4).collect(),
        IpNet::V6(v6) => {
            let all: Vec<IpAddr> = v6.hosts().map(IpAddr::V6).collect();
            if v6.prefix_len() < 127 {
                all[1..all.len() - 1].to_vec()
            } else {
                all
            }
        }
    };
    all.into_iter().filter(|ip| probeable(*ip)).collect()
}

/// Whether an address names one host: not multicast, not the limited broadcast, not unspecified.
fn probeable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// A DNS host name: labels of letters, digits and hyphens (not first or last), 63 characters at
/// most each, 253 in all.
fn is_host_name(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // All digits and dots would be a malformed IPv4 address, not a name.
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// What a port is probed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Rtsp,
    Http,
    /// A port of no known protocol: RTSP `OPTIONS`, then whichever of RTSP or HTTP answers.
    Either,
}

fn probe_for(port: u16) -> Probe {
    match port {
        554 | 8554 => Probe::Rtsp,
        80 | 8080 => Probe::Http,
        _ => Probe::Either,
    }
}

/// Probes every address of the request on every port, [`CONCURRENCY`] at once, and returns the
/// cameras that answered, sorted by address then port. A host name that does not resolve is
/// skipped (see [`DiscoveryRequest::resolve`] to refuse it instead).
pub async fn discover(request: &DiscoveryRequest) -> Vec<DiscoveredCamera> {
    let (addresses, _) = request.addresses().await;
    let ports = request.ports();
    let timeout = request.timeout;
    let probes = addresses
        .iter()
        .flat_map(|ip| ports.iter().map(move |port| SocketAddr::new(*ip, *port)));
    let mut found: Vec<(SocketAddr, DiscoveredCamera)> = stream::iter(probes)
        .map(|address| async move {
            let camera = probe(address, probe_for(address.port()), timeout).await;
            let outcome = if camera.is_some() { "camera" } else { "none" };
            metrics::counter!("atelier_surveillance_discovery_probes_total", "outcome" => outcome)
                .increment(1);
            camera.map(|camera| (address, camera))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|found| async move { found })
        .collect()
        .await;
    found.sort_by_key(|(address, _)| (address.ip(), address.port()));
    found.into_iter().map(|(_, camera)| camera).collect()
}

/// A reply's status line and the headers this module reads.
#[derive(Debug, Default)]
struct Reply {
    /// The first line, such as `RTSP/1.0 200 OK`.
    status: String,
    server: Option<String>,
    content_type: Option<String>,
}

impl Reply {
    fn is_rtsp(&self) -> bool {
        self.status.starts_with("RTSP/1.0 ")
    }

    fn is_http(&self) -> bool {
        self.status.starts_with("HTTP/1.")
    }

    fn serves_jpeg(&self) -> bool {
        self.content_type.as_deref().is_some_and(|t| {
            let t = t.trim().to_ascii_lowercase();
            t.starts_with("multipart/x-mixed-replace") || t.starts_with("image/jpeg")
        })
    }
}

/// One address and port: `None` when it is closed, silent, or answers neither protocol.
async fn probe(address: SocketAddr, kind: Probe, timeout: Duration) -> Option<DiscoveredCamera> {
    let started = Instant::now();
    let (protocol, reply) = match kind {
        Probe::Rtsp => {
            let reply = exchange(address, &rtsp_options(address), timeout).await?;
            reply.is_rtsp().then_some(("rtsp", reply))?
        }
        Probe::Http => {
            let reply = exchange(address, &http_get(address), timeout).await?;
            reply.is_http().then_some(("http", reply))?
        }
        Probe::Either => {
            let reply = exchange(address, &rtsp_options(address), timeout).await?;
            if reply.is_rtsp() {
                ("rtsp", reply)
            } else if reply.is_http() {
                ("http", reply)
            } else {
                return None;
            }
        }
    };
    let response_time_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (server, mjpeg) = if protocol == "http" && kind == Probe::Either {
        // The first reply answered an RTSP request; a GET tells what the server serves.
        match exchange(address, &http_get(address), timeout).await {
            Some(get) if get.is_http() => {
                let mjpeg = get.serves_jpeg();
                (get.server.or(reply.server), mjpeg)
            }
            _ => {
                let mjpeg = reply.serves_jpeg();
                (reply.server, mjpeg)
            }
        }
    } else {
        let mjpeg = protocol == "http" && reply.serves_jpeg();
        (reply.server, mjpeg)
    };
    let (manufacturer, model) = server.as_deref().map(identify).unwrap_or_default();
    Some(DiscoveredCamera {
        ip: address.ip().to_string(),
        port: address.port(),
        protocol,
        url: format!("{protocol}://{}/", authority(address)),
        manufacturer,
        model,
        server,
        mjpeg,
        response_time_ms,
        reachable: true,
    })
}

fn authority(address: SocketAddr) -> String {
    // SocketAddr's Display brackets an IPv6 address, as a URL's authority wants.
    address.to_string()
}

fn rtsp_options(address: SocketAddr) -> String {
    format!(
        "OPTIONS rtsp://{}/ RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        authority(address)
    )
}

fn http_get(address: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.0\r\nHost: {}\r\nAccept: */*\r\n\r\n",
        authority(address)
    )
}

/// Connects, sends the request and reads the reply's headers, each step within `timeout`:
/// `None` when a step fails or times out, or the peer says nothing.
async fn exchange(address: SocketAddr, request: &str, timeout: Duration) -> Option<Reply> {
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(timeout, stream.write_all(request.as_bytes()))
        .await
        .ok()?
        .ok()?;
    let head = tokio::time::timeout(timeout, read_head(&mut stream))
        .await
        .ok()?;
    if head.is_empty() {
        return None;
    }
    Some(parse_head(&String::from_utf8_lossy(&head)))
}

/// Reads until the end of the headers, the end of the stream or [`MAX_HEADER_BYTES`], whichever
/// comes first; an error ends the reading with what came before it.
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while head.len() < MAX_HEADER_BYTES {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    head.truncate(MAX_HEADER_BYTES);
    head
}

fn parse_head(text: &str) -> Reply {
    let mut lines = text.lines();
    let mut reply = Reply {
        status: lines.next().unwrap_or_default().trim().to_owned(),
        ..Reply::default()
    };
    for line in lines {
        if line.trim().is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if name.trim().eq_ignore_ascii_case("server") {
            reply.server.get_or_insert_with(|| value.to_owned());
        } else if name.trim().eq_ignore_ascii_case("content-type") {
            reply.content_type.get_or_insert_with(|| value.to_owned());
        }
    }
    reply
}

/// The camera makers recognized in a `Server` header: a lowercase fragment and the maker's name.
const MAKERS: &[(&str, &str)] = &[
    ("hikvision", "Hikvision"),
    ("dahua", "Dahua"),
    ("axis", "Axis"),
    ("hanwha", "Hanwha"),
    ("wisenet", "Hanwha"),
    ("samsung", "Samsung"),
    ("uniview", "Uniview"),
    ("reolink", "Reolink"),
    ("amcrest", "Amcrest"),
    ("foscam", "Foscam"),
    ("vivotek", "Vivotek"),
    ("bosch", "Bosch"),
    ("mobotix", "Mobotix"),
    ("ubiquiti", "Ubiquiti"),
    ("unifi", "Ubiquiti"),
    ("tp-link", "TP-Link"),
    ("tapo", "TP-Link"),
    ("panasonic", "Panasonic"),
    ("sony", "Sony"),
    ("geovision", "GeoVision"),
];

/// The maker and model a `Server` header names, when it names a known maker: the model is the
/// word after the maker's name when it holds a digit (`AXIS M3045-V` gives Axis, M3045-V).
fn identify(server: &str) -> (Option<String>, Option<String>) {
    let lower = server.to_ascii_lowercase();
    let Some((fragment, maker)) = MAKERS.iter().find(|(fragment, _)| {
        // A word of its own, or the start of one (Hikvision-Webs), not inside another word.
        lower
            .match_indices(fragment)
            .any(|(at, _)| at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric())
    }) else {
        return (None, None);
    };
    let words: Vec<&str> = server.split_whitespace().collect();
    let model = words
        .iter()
        .position(|word| word.to_ascii_lowercase().starts_with(fragment))
        .and_then(|at| words.get(at + 1))
        .map(|word| word.trim_matches(|c: char| c == ',' || c == ';' || c == '(' || c == ')'))
        .filter(|word| word.bytes().any(|b| b.is_ascii_digit()) && !word.contains('/'))
        .map(str::to_owned);
    (Some((*maker).to_owned()), model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::net::TcpListener;
    use tokio::sync::Mutex;

    const LOOPBACK: &str = "127.0.0.1";

    fn refused_fields(result: Result<DiscoveryRequest, FieldErrors>) -> Vec<String> {
        result
            .expect_err("the request should be refused")
            .into_iter()
            .map(|(field, _)| field)
            .collect()
    }

    fn hosts(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|h| (*h).to_owned()).collect())
    }

    /// Answers every connection with `answer(request head)`: a reply, and whether an MJPEG
    /// stream of frames follows it until the client goes away.
    async fn serve(answer: fn(&str) -> (String, bool)) -> u16 {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let head = read_head_of(&mut stream).await;
                    let (reply, streams) = answer(&head);
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    if !streams {
                        return;
                    }
                    loop {
                        let frame =
                            b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xd9\r\n";
                        if stream.write_all(frame).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
            }
        });
        port
    }

    async fn read_head_of(stream: &mut TcpStream) -> String {
        String::from_utf8_lossy(&read_head(stream).await).into_owned()
    }

    fn rtsp_camera(head: &str) -> (String, bool) {
        assert!(head.starts_with("OPTIONS rtsp://127.0.0.1:"), "{head}");
        (
            "RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Dahua Rtsp Server\r\n\
             Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n"
                .to_owned(),
            false,
        )
    }

    /// An MJPEG camera's web server: a GET is answered with an endless stream, any other method
    /// with a 400, as most web servers answer an RTSP request.
    fn mjpeg_camera(head: &str) -> (String, bool) {
        if head.starts_with("GET / HTTP/1.0\r\n") {
            assert!(head.contains("\r\nHost: 127.0.0.1:"), "{head}");
            (
                "HTTP/1.0 200 OK\r\nServer: AXIS M3045-V\r\n\
                 Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
                    .to_owned(),
                true,
            )
        } else {
            (
                "HTTP/1.1 400 Bad Request\r\nServer: AXIS M3045-V\r\nContent-Length: 0\r\n\r\n"
                    .to_owned(),
                false,
            )
        }
    }

    /// Accepts connections and never answers, until the test ends.
    async fn silent() -> u16 {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                held.lock().await.push(stream);
            }
        });
        port
    }

    /// A port nothing listens on: bound, then released.
    async fn closed() -> u16 {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        listener.local_addr().unwrap().port()
    }

    fn loopback(port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::from_str(LOOPBACK).unwrap(), port)
    }

    #[tokio::test]
    async fn discovery_finds_the_rtsp_and_mjpeg_cameras_and_skips_silent_and_closed_ports() {
        let rtsp = serve(rtsp_camera).await;
        let http = serve(mjpeg_camera).await;
        let silent = silent().await;
        let closed = closed().await;
        let request = DiscoveryRequest::parse(
            hosts(&[LOOPBACK]),
            None,
            Some(vec![rtsp, http, silent, closed]),
            Some(200),
        )
        .unwrap();

        let found = discover(&request).await;

        let ports: Vec<u16> = found.iter().map(|c| c.port).collect();
        let mut expected = vec![rtsp, http];
        expected.sort();
        assert_eq!(ports, expected, "{found:#?}");
        let rtsp_camera = found.iter().find(|c| c.port == rtsp).unwrap();
        assert_eq!(rtsp_camera.protocol, "rtsp");
        assert_eq!(rtsp_camera.ip, LOOPBACK);
        assert_eq!(rtsp_camera.url, format!("rtsp://127.0.0.1:{rtsp}/"));
        assert_eq!(rtsp_camera.server.as_deref(), Some("Dahua Rtsp Server"));
        assert_eq!(rtsp_camera.manufacturer.as_deref(), Some("Dahua"));
        assert_eq!(rtsp_camera.model, None);
        assert!(!rtsp_camera.mjpeg && rtsp_camera.reachable);
        let mjpeg_camera = found.iter().find(|c| c.port == http).unwrap();
        assert_eq!(mjpeg_camera.protocol, "http");
        assert_eq!(mjpeg_camera.url, format!("http://127.0.0.1:{http}/"));
        assert_eq!(mjpeg_camera.server.as_deref(), Some("AXIS M3045-V"));
        assert_eq!(mjpeg_camera.manufacturer.as_deref(), Some("Axis"));
        assert_eq!(mjpeg_camera.model.as_deref(), Some("M3045-V"));
        assert!(mjpeg_camera.mjpeg && mjpeg_camera.reachable);
    }

    #[tokio::test]
    async fn results_are_sorted_by_address_then_port_across_hosts() {
        let rtsp = serve(rtsp_camera).await;
        let http = serve(mjpeg_camera).await;
        // A host name resolving to loopback, listed before the address itself.
        let request = DiscoveryRequest::parse(
            hosts(&["localhost", LOOPBACK]),
            None,
            Some(vec![http.max(rtsp), http.min(rtsp)]),
            None,
        )
        .unwrap();

        let found = discover(&request).await;

        let keys: Vec<(IpAddr, u16)> = found
            .iter()
            .map(|c| (c.ip.parse().unwrap(), c.port))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(keys.contains(&(loopback(rtsp).ip(), rtsp)));
        assert!(keys.contains(&(loopback(http).ip(), http)));
        // 127.0.0.1 listed twice (by name and by address) is probed once.
        assert_eq!(keys.iter().filter(|k| k.0 == loopback(0).ip()).count(), 2);
    }

    #[tokio::test]
    async fn a_known_rtsp_port_accepts_only_an_rtsp_reply() {
        let rtsp = serve(rtsp_camera).await;
        let http = serve(mjpeg_camera).await;
        let timeout = Duration::from_millis(500);

        let camera = probe(loopback(rtsp), Probe::Rtsp, timeout).await.unwrap();
        assert_eq!(camera.protocol, "rtsp");
        assert!(probe(loopback(http), Probe::Rtsp, timeout).await.is_none());
    }

    #[tokio::test]
    async fn a_known_http_port_is_asked_for_its_page_and_its_content_type_tells_mjpeg() {
        let http = serve(mjpeg_camera).await;
        let snapshot = serve(|_| {
            (
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\nJPEG"
                    .to_owned(),
                false,
            )
        })
        .await;
        let page = serve(|_| {
            (
                "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\n\r\n<html>"
                    .to_owned(),
                false,
            )
        })
        .await;
        let timeout = Duration::from_millis(500);

        let camera = probe(loopback(http), Probe::Http, timeout).await.unwrap();
        assert_eq!((camera.protocol, camera.mjpeg), ("http", true));
        let camera = probe(loopback(snapshot), Probe::Http, timeout)
            .await
            .unwrap();
        assert!(camera.mjpeg);
        assert_eq!(camera.server, None);
        let camera = probe(loopback(page), Probe::Http, timeout).await.unwrap();
        assert!(!camera.mjpeg);
        assert_eq!(camera.server.as_deref(), Some("nginx"));
        assert_eq!((camera.manufacturer, camera.model), (None, None));
    }

    #[tokio::test]
    async fn a_port_answering_neither_protocol_is_skipped() {
        let ssh = serve(|_| ("SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned(), false)).await;
        let request =
            DiscoveryRequest::parse(hosts(&[LOOPBACK]), None, Some(vec![ssh]), Some(200)).unwrap();

        assert_eq!(discover(&request).await, Vec::new());
    }

    #[test]
    fn a_request_names_hosts_or_a_cidr_but_not_both_nor_neither() {
        assert_eq!(
            refused_fields(DiscoveryRequest::parse(None, None, None, None)),
            ["hosts"]
        );
        assert_eq!(
            refused_fields(DiscoveryRequest::parse(
                hosts(&[LOOPBACK]),
                Some("127.0.0.0/30".into()),
                None,
                None
            )),
            ["cidr"]
        );
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let fields = refused_fields(DiscoveryRequest::parse(
            hosts(&["127.0.0.1", "not a host!", "224.0.0.1", "-bad-.example"]),
            None,
            Some(vec![554, 0]),
            Some(10),
        ));
        assert_eq!(
            fields,
            ["hosts[1]", "hosts[2]", "hosts[3]", "ports[1]", "timeout_ms"]
        );
    }

    #[test]
    fn a_host_list_is_neither_empty_nor_longer_than_256() {
        assert_eq!(
            refused_fields(DiscoveryRequest::parse(Some(vec![]), None, None, None)),
            ["hosts"]
        );
        let many: Vec<String> = (0..257)
            .map(|i| format!("127.0.{}.{}", i / 200, i % 200 + 1))
            .collect();
        assert_eq!(
            refused_fields(DiscoveryRequest::parse(Some(many), None, None, None)),
            ["hosts"]
        );
    }

    #[test]
    fn ports_are_between_one_and_sixteen_and_none_is_zero() {
        let parse =
            |ports: Vec<u16>| DiscoveryRequest::parse(hosts(&[LOOPBACK]), None, Some(ports), None);
        assert_eq!(refused_fields(parse(vec![])), ["ports"]);
        assert_eq!(refused_fields(parse((1..=17).collect())), ["ports"]);
        assert_eq!(refused_fields(parse(vec![0])), ["ports[0]"]);
        let request = parse(vec![8554, 554, 8554]).unwrap();
        assert_eq!(request.ports(), [554, 8554]);
    }

    #[test]
    fn the_timeout_is_between_50_and_5000_ms_and_500_by_default() {
        let parse = |ms| DiscoveryRequest::parse(hosts(&[LOOPBACK]), None, None, ms);
        assert_eq!(refused_fields(parse(Some(49))), ["timeout_ms"]);
        assert_eq!(refused_fields(parse(Some(5001))), ["timeout_ms"]);
        assert_eq!(parse(Some(50)).unwrap().timeout, Duration::from_millis(50));
        assert_eq!(parse(Some(5000)).unwrap().timeout, Duration::from_secs(5));
        let request = parse(None).unwrap();
        assert_eq!(request.timeout, Duration::from_millis(500));
        assert_eq!(request.ports(), [554, 8554, 80, 8080]);
    }

    #[test]
    fn a_cidr_is_at_most_a_slash_24_or_a_slash_120_and_well_formed() {
        let parse = |cidr: &str| DiscoveryRequest::parse(None, Some(cidr.into()), None, None);
        assert_eq!(refused_fields(parse("127.0.0.0/23")), ["cidr"]);
        assert_eq!(refused_fields(parse("::1/119")), ["cidr"]);
        assert_eq!(refused_fields(parse("127.0.0.1")), ["cidr"]);
        assert_eq!(refused_fields(parse("127.0.0.0/33")), ["cidr"]);
        assert_eq!(refused_fields(parse("224.0.0.0/24")), ["cidr"]);
        assert!(parse("127.0.0.0/24").is_ok());
        assert!(parse("::/120").is_err());
        assert!(parse("fd00::/120").is_ok());
    }

    #[tokio::test]
    async fn a_slash_30_expands_to_its_two_hosts_without_network_and_broadcast() {
        let request =
            DiscoveryRequest::parse(None, Some("127.0.0.0/30".into()), None, None).unwrap();
        let addresses = request.resolve().await.unwrap();
        assert_eq!(
            addresses,
            [IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])]
        );
    }

    #[tokio::test]
    async fn a_slash_24_gives_254_hosts_and_a_slash_120_gives_254_too() {
        let v4 = DiscoveryRequest::parse(None, Some("127.0.0.7/24".into()), None, None).unwrap();
        assert_eq!(v4.resolve().await.unwrap().len(), 254);
        let v6 = DiscoveryRequest::parse(None, Some("fd00::/120".into()), None, None).unwrap();
        let addresses = v6.resolve().await.unwrap();
        assert_eq!(addresses.len(), 254);
        assert_eq!(addresses[0], IpAddr::from_str("fd00::1").unwrap());
    }

    #[tokio::test]
    async fn a_host_name_stands_for_the_addresses_it_resolves_to() {
        let request = DiscoveryRequest::parse(hosts(&["LocalHost"]), None, None, None).unwrap();
        assert_eq!(
            request.targets,
            Targets::Hosts(vec![Host::Name("localhost".into())])
        );
        let addresses = request.resolve().await.unwrap();
        assert!(!addresses.is_empty());
        assert!(addresses.iter().all(IpAddr::is_loopback), "{addresses:?}");
    }

    #[test]
    fn a_server_header_names_a_maker_only_when_it_is_known() {
        assert_eq!(
            identify("AXIS M3045-V Network Camera"),
            (Some("Axis".into()), Some("M3045-V".into()))
        );
        assert_eq!(identify("Hikvision-Webs"), (Some("Hikvision".into()), None));
        assert_eq!(identify("lighttpd/1.4.59"), (None, None));
        assert_eq!(identify("Taxisoft 2.0"), (None, None));
    }
}
