//! A shaped link to a viewer, made of real kernel parts: a network namespace for the
//! viewer, a veth pair between it and the root namespace (where the server runs), a `tbf`
//! bandwidth cap and nftables random loss on the server → viewer direction.
//!
//! Needs root, `ip` (iproute2), `tc` and `nft` (nftables). The kernel here has no netem:
//! no added delay or reordering (see `/work/shared/notes/networks.md`). Everything made is
//! removed on drop, also when a test panics; what a killed test left behind is swept the
//! next time a lab with the same index is made.
//!
//! Addresses: lab `n` uses 10.77.n.0/30, 10.77.n.1 on the root side (the server listens
//! and gathers ICE there), 10.77.n.2 in the namespace (the viewer).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One namespace + veth pair (+ its own nftables table once loss or a UDP block is set).
pub struct NetLab {
    /// Network namespace of the viewer side.
    pub ns: String,
    /// Root-namespace end of the veth pair (its egress is server → viewer).
    pub root_if: String,
    /// Namespace end of the veth pair.
    pub ns_if: String,
    pub root_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
    /// nftables table (family inet) holding this lab's loss rule.
    table: String,
    has_table: bool,
}

/// Runs a command; Err with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Feeds `script` to `nft -f -`.
fn nft(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed on {script:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn names(pid: u32, index: u8) -> (String, String, String) {
    // Interface names are at most 15 characters: "lcr" + 7-digit pid + "x" + 3 = 14.
    (
        format!("lc{pid}x{index}"),
        format!("lcr{pid}x{index}"),
        format!("lcn{pid}x{index}"),
    )
}

/// Removes what a lab of a process that no longer exists left behind (a test killed by a
/// timeout does not run its drops).
fn sweep_stale() {
    let Ok(links) = run("ip", &["-o", "link", "show"]) else {
        return;
    };
    for line in links.lines() {
        // "12: lcr1234x3@if11: <...>"
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        let Some((pid, index)) = name
            .strip_prefix("lcr")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(p, i)| Some((p.parse::<u32>().ok()?, i.parse::<u8>().ok()?)))
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let (ns, root_if, _) = names(pid, index);
        let _ = run("ip", &["link", "del", &root_if]);
        let _ = run("ip", &["netns", "del", &ns]);
        let _ = run("nft", &["delete", "table", "inet", &ns]);
    }
    // Namespaces without links (a lab killed half-way).
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let pid = ns
                .strip_prefix("lc")
                .and_then(|r| r.split_once('x'))
                .and_then(|(p, _)| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = run("ip", &["netns", "del", ns]);
                    let _ = run("nft", &["delete", "table", "inet", ns]);
                }
            }
        }
    }
}

impl NetLab {
    /// Whether labs can be made here: Err(reason) when not root, a tool is missing or
    /// namespaces cannot be created (e.g. in an unprivileged container).
    pub fn available() -> Result<(), String> {
        static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
        AVAILABLE
            .get_or_init(|| {
                let uid = run("id", &["-u"])?;
                if uid.trim() != "0" {
                    return Err(format!("not root (uid {})", uid.trim()));
                }
                run("ip", &["-V"]).map_err(|e| format!("ip (iproute2) missing: {e}"))?;
                run("tc", &["-V"]).map_err(|e| format!("tc (iproute2) missing: {e}"))?;
                run("nft", &["--version"]).map_err(|e| format!("nft (nftables) missing: {e}"))?;
                let probe = format!("lc{}probe", std::process::id());
                run("ip", &["netns", "add", &probe])?;
                let _ = run("ip", &["netns", "del", &probe]);
                Ok(())
            })
            .clone()
    }

    /// Makes lab `index` (0..=255; each test of a run its own): namespace, veth pair,
    /// addresses, links up.
    pub fn new(index: u8) -> Result<NetLab, String> {
        Self::available()?;
        sweep_stale();
        let (ns, root_if, ns_if) = names(std::process::id(), index);
        let root_ip = Ipv4Addr::new(10, 77, index, 1);
        let ns_ip = Ipv4Addr::new(10, 77, index, 2);
        // Created piece by piece; the drop removes whatever exists.
        let lab = NetLab {
            table: ns.clone(),
            ns,
            root_if,
            ns_if,
            root_ip,
            ns_ip,
            has_table: false,
        };
        let in_use = run(
            "ip",
            &["-o", "addr", "show", "to", &format!("{root_ip}/30")],
        )?;
        if !in_use.trim().is_empty() {
            return Err(format!(
                "10.77.{index}.0/30 is already in use here: {}",
                in_use.trim()
            ));
        }
        run("ip", &["netns", "add", &lab.ns])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &lab.root_if,
                "type",
                "veth",
                "peer",
                "name",
                &lab.ns_if,
                "netns",
                &lab.ns,
            ],
        )?;
        run(
            "ip",
            &["addr", "add", &format!("{root_ip}/30"), "dev", &lab.root_if],
        )?;
        run("ip", &["link", "set", &lab.root_if, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &lab.ns, "ip"];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        in_ns(&["addr", "add", &format!("{ns_ip}/30"), "dev", &lab.ns_if])?;
        in_ns(&["link", "set", &lab.ns_if, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        // A default route, as any viewer's machine has: without one, joining the mDNS
        // multicast group fails (ENODEV) and webrtc-rs cannot build a peer connection.
        in_ns(&["route", "add", "default", "via", &root_ip.to_string()])?;
        Ok(lab)
    }

    /// Caps server → viewer at `rate_kbit` kbit/s (a token bucket with a 20 kB burst and
    /// at most 100 ms of queue: what a congested access link does).
    pub fn cap(&self, rate_kbit: u32) {
        run(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &self.root_if,
                "root",
                "tbf",
                "rate",
                &format!("{rate_kbit}kbit"),
                "burst",
                "20kb",
                "latency",
                "100ms",
            ],
        )
        .unwrap_or_else(|e| panic!("cap: {e}"));
    }

    /// Lifts the cap.
    pub fn uncap(&self) {
        // Fails only when there is no cap: fine.
        let _ = run("tc", &["qdisc", "del", "dev", &self.root_if, "root"]);
    }

    /// Drops `percent` % of the UDP packets server → viewer at random (0: none).
    pub fn loss(&mut self, percent: u32) {
        let t = &self.table;
        let mut script = format!(
            "add table inet {t}\n\
             add chain inet {t} out {{ type filter hook output priority 0; policy accept; }}\n\
             flush chain inet {t} out\n"
        );
        if percent > 0 {
            script += &format!(
                "add rule inet {t} out oifname \"{}\" meta l4proto udp numgen random mod 100 < {percent} drop\n",
                self.root_if
            );
        }
        self.has_table = true;
        nft(&script).unwrap_or_else(|e| panic!("loss: {e}"));
    }

    /// Drops every UDP packet between the namespace and the server, both ways (a network
    /// that blocks UDP: only TCP gets through). Rules in this lab's own table, removed
    /// with the lab.
    pub fn drop_udp(&mut self) {
        let (t, i) = (&self.table, &self.root_if);
        let script = format!(
            "add table inet {t}\n\
             add chain inet {t} udp_out {{ type filter hook output priority 0; policy accept; }}\n\
             add chain inet {t} udp_in {{ type filter hook input priority 0; policy accept; }}\n\
             flush chain inet {t} udp_out\n\
             flush chain inet {t} udp_in\n\
             add rule inet {t} udp_out oifname \"{i}\" meta l4proto udp counter drop\n\
             add rule inet {t} udp_in iifname \"{i}\" meta l4proto udp counter drop\n"
        );
        self.has_table = true;
        nft(&script).unwrap_or_else(|e| panic!("drop_udp: {e}"));
    }

    /// Lets only these ports of the server's address through between the namespace and
    /// the server (both ways): a network where the viewer reaches the web server and a TURN
    /// server, nothing else (no direct UDP or TCP to the media ports).
    pub fn allow_only(&mut self, tcp_ports: &[u16], udp_ports: &[u16]) {
        let (t, i) = (&self.table, &self.root_if);
        let set = |p: &[u16]| {
            if p.is_empty() {
                "{ 0 }".to_string()
            } else {
                format!(
                    "{{ {} }}",
                    p.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        let (tcp, udp) = (set(tcp_ports), set(udp_ports));
        let script = format!(
            "add table inet {t}\n\
             add chain inet {t} only_out {{ type filter hook output priority 0; policy accept; }}\n\
             add chain inet {t} only_in {{ type filter hook input priority 0; policy accept; }}\n\
             flush chain inet {t} only_out\n\
             flush chain inet {t} only_in\n\
             add rule inet {t} only_in iifname \"{i}\" tcp dport {tcp} accept\n\
             add rule inet {t} only_in iifname \"{i}\" udp dport {udp} accept\n\
             add rule inet {t} only_in iifname \"{i}\" counter drop\n\
             add rule inet {t} only_out oifname \"{i}\" tcp sport {tcp} accept\n\
             add rule inet {t} only_out oifname \"{i}\" udp sport {udp} accept\n\
             add rule inet {t} only_out oifname \"{i}\" counter drop\n"
        );
        self.has_table = true;
        nft(&script).unwrap_or_else(|e| panic!("allow_only: {e}\n{script}"));
    }

    /// The viewer's machine changes networks: its address moves from `ns_ip` to a second
    /// subnet of the veth pair (10.77.INDEX.6, the server side .5), the old one is gone,
    /// and its default route goes through the new subnet. The server stays reachable on
    /// `root_ip`. Returns the new address.
    pub fn move_viewer(&self) -> Ipv4Addr {
        let o = self.root_ip.octets();
        let (root2, ns2) = (
            Ipv4Addr::new(o[0], o[1], o[2], 5),
            Ipv4Addr::new(o[0], o[1], o[2], 6),
        );
        run(
            "ip",
            &["addr", "add", &format!("{root2}/30"), "dev", &self.root_if],
        )
        .unwrap_or_else(|e| panic!("move_viewer: {e}"));
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.ns, "ip"];
            all.extend_from_slice(args);
            run("ip", &all).unwrap_or_else(|e| panic!("move_viewer: {e}"))
        };
        in_ns(&["addr", "add", &format!("{ns2}/30"), "dev", &self.ns_if]);
        in_ns(&[
            "addr",
            "del",
            &format!("{}/30", self.ns_ip),
            "dev",
            &self.ns_if,
        ]);
        in_ns(&["route", "replace", "default", "via", &root2.to_string()]);
        ns2
    }

    /// This lab's nftables table with its counters (for failure messages).
    pub fn nft_stats(&self) -> String {
        if !self.has_table {
            return String::new();
        }
        run("nft", &["list", "table", "inet", &self.table]).unwrap_or_else(|e| e)
    }

    /// `program` run inside the namespace (`ip netns exec NS program`).
    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// The tc statistics of the cap (sent, dropped, overlimits), for failure messages.
    pub fn cap_stats(&self) -> String {
        run("tc", &["-s", "qdisc", "show", "dev", &self.root_if]).unwrap_or_else(|e| e)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if self.has_table {
            let _ = run("nft", &["delete", "table", "inet", &self.table]);
        }
        // Deleting one end deletes the pair (and the cap with it).
        let _ = run("ip", &["link", "del", &self.root_if]);
        let _ = run("ip", &["netns", "del", &self.ns]);
    }
}

/// For tests that need a lab: the lab, or `None` after printing why the test is skipped
/// (only when namespaces are unavailable here; a lab that fails to build is a failure).
pub fn lab_or_skip(index: u8) -> Option<NetLab> {
    if let Err(reason) = NetLab::available() {
        eprintln!("SKIPPED (network namespaces unavailable: {reason})");
        return None;
    }
    Some(NetLab::new(index).unwrap_or_else(|e| panic!("network lab {index}: {e}")))
}
