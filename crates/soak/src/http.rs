//! A small HTTP/1.1 client on std sockets, for loopback addresses only: keep-alive connections, a read/write
//! timeout, a body that can be sent in parts, chunked or `Content-Length` responses.
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Resolve `host:port` and refuse anything that is not a loopback address.
pub fn loopback(addr: &str) -> io::Result<SocketAddr> {
    let addr = addr.trim().trim_start_matches("http://").trim_end_matches('/');
    let resolved: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    resolved
        .iter()
        .copied()
        .find(|a| a.ip().is_loopback())
        .filter(|_| resolved.iter().all(|a| a.ip().is_loopback()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr}: loopback addresses only (127.0.0.0/8, localhost, [::1])"),
            )
        })
}

/// A response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A JSON body with an `error` field (a string, or OpenAI's object with a `message`).
    pub fn is_json_error(&self) -> bool {
        match self.json() {
            Some(v) => match &v["error"] {
                Value::String(_) => true,
                Value::Object(o) => o.get("message").is_some_and(Value::is_string),
                _ => false,
            },
            None => false,
        }
    }
}

/// One connection, reused for several requests while the server keeps it open.
pub struct Conn {
    reader: BufReader<TcpStream>,
    /// The last request was HEAD: its response has headers only.
    head_request: bool,
}

impl Conn {
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { reader: BufReader::with_capacity(64 << 10, stream), head_request: false })
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Request line and headers (with `Content-Length` for `len` bytes of body).
    pub fn send_head(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        len: usize,
        close: bool,
    ) -> io::Result<()> {
        self.head_request = method == "HEAD";
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if close {
            head.push_str("Connection: close\r\n");
        }
        if method != "GET" && method != "HEAD" || len > 0 {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.reader.get_mut().write_all(head.as_bytes())
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Read one response (status line, headers, body).
    pub fn read_response(&mut self) -> io::Result<Resp> {
        let r = &mut self.reader;
        let mut line = String::new();
        // Skip interim 1xx responses.
        let status = loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
            }
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
            if (100..200).contains(&status) {
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line == "\r\n" {
                        break;
                    }
                }
                continue;
            }
            break status;
        };
        let mut headers = Vec::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the headers"));
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        // No body after HEAD, 204 or 304, whatever Content-Length says (RFC 9112 §6.3).
        let body = if self.head_request || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers end with an empty line.
                    loop {
                        line.clear();
                        if r.read_line(&mut line)? == 0 || line == "\r\n" {
                            break;
                        }
                    }
                    break body;
                }
                let start = body.len();
                body.resize(start + size, 0);
                r.read_exact(&mut body[start..])?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().map_err(|_| io::Error::other("bad content-length"))?;
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)?;
            body
        } else {
            let mut body = Vec::new();
            r.read_to_end(&mut body)?;
            body
        };
        Ok(Resp { status, headers, body })
    }
}

/// A client for one server: keeps one connection open between requests.
pub struct Client {
    pub addr: SocketAddr,
    pub timeout: Duration,
    conn: Option<Conn>,
}

impl Client {
    /// A client for `host:port` (loopback only) with a per-read/write timeout.
    pub fn new(addr: &str, timeout: Duration) -> io::Result<Client> {
        Ok(Client { addr: loopback(addr)?, timeout, conn: None })
    }

    /// Send one request and read its answer. `close` asks for (and uses) a fresh connection that is closed after.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8], close: bool) -> io::Result<Resp> {
        if close {
            self.conn = None;
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => Conn::open(self.addr, self.timeout)?,
        };
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("Content-Type", "application/json")] };
        let sent = conn.send_head(method, path, headers, body.len(), close).and_then(|_| conn.write(body));
        let resp = match sent {
            Ok(()) => conn.read_response(),
            // The server may answer (413) and close before it has read the whole body: the answer still counts.
            Err(e) => conn.read_response().map_err(|_| e),
        }?;
        let keep = !close && !resp.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if keep {
            self.conn = Some(conn);
        }
        Ok(resp)
    }

    pub fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.request("GET", path, b"", false)
    }

    pub fn post_json(&mut self, path: &str, body: &Value) -> io::Result<Resp> {
        self.request("POST", path, body.to_string().as_bytes(), false)
    }
}

/// One request on a fresh connection (`Connection: close`).
pub fn once(addr: &str, method: &str, path: &str, body: &[u8], timeout: Duration) -> io::Result<Resp> {
    Client::new(addr, timeout)?.request(method, path, body, true)
}

/// A value of a Prometheus line `NAME{labels} VALUE` from `/metrics` text (`name` includes the labels).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// Time a closure.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let v = f();
    (v, t0.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(loopback("127.0.0.1:80").is_ok());
        assert!(loopback("http://127.0.0.1:80/").is_ok());
        assert!(loopback("[::1]:80").is_ok());
        assert!(loopback("10.0.0.1:80").is_err());
        assert!(loopback("192.168.1.1:80").is_err());
    }
}
