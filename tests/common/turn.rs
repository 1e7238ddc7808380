//! A real TURN server for tests: Debian's coturn (`turnserver`) in the foreground,
//! long-term credentials, UDP and TCP listeners on one address, relays on the same
//! address. Killed by its id when dropped.

use std::net::{IpAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "lumacast";
pub const PASSWORD: &str = "turn-secret";

pub struct Turn {
    child: Child,
    pub ip: IpAddr,
    pub port: u16,
    log: std::path::PathBuf,
}

fn free_port(ip: IpAddr) -> u16 {
    // Free for TCP and UDP alike (coturn listens on both).
    loop {
        let t = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

impl Turn {
    /// Starts coturn on `ip` (a free port), relays allowed to private and loopback peers.
    pub fn start(ip: IpAddr) -> Turn {
        let bin = std::env::var("LUMACAST_TURNSERVER").unwrap_or_else(|_| "turnserver".into());
        let port = free_port(ip);
        let log =
            std::env::temp_dir().join(format!("lumacast-turn-{}-{port}.log", std::process::id()));
        // Relay ports: a 200-port range derived from the listening port.
        let min = 30_000 + (port % 150) * 200;
        let child = Command::new(&bin)
            .args([
                "-n",
                "--listening-ip",
                &ip.to_string(),
                "--listening-port",
                &port.to_string(),
                "--relay-ip",
                &ip.to_string(),
                "--min-port",
                &min.to_string(),
                "--max-port",
                &(min + 199).to_string(),
                "--lt-cred-mech",
                "--user",
                &format!("{USER}:{PASSWORD}"),
                "--realm",
                "lumacast.test",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
                "--no-rfc5780",
                "--simple-log",
                "--log-file",
                &log.to_string_lossy(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} ({e}): apt-get install coturn (scripts/test.sh does)")
            });
        let t = Turn {
            child,
            ip,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "coturn did not listen on {ip}:{port} within 10 s:\n{}",
                t.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    /// `turn:IP:PORT?transport=udp` and `…=tcp`.
    pub fn urls(&self) -> [String; 2] {
        [
            format!("turn:{}:{}?transport=udp", self.ip, self.port),
            format!("turn:{}:{}?transport=tcp", self.ip, self.port),
        ]
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
