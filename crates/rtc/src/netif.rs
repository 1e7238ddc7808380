//! Network interfaces by name, for choosing where ICE gathers host candidates.

use crate::RtcError;
use std::net::IpAddr;

/// The usable addresses (IPv4, and IPv6 that is not link-local) of the interfaces named
/// in `names`, in order. An unknown name is an error that lists the interfaces there are.
pub fn interface_addrs(names: &[String]) -> Result<Vec<IpAddr>, RtcError> {
    let all = rtc::shared::ifaces::ifaces()
        .map_err(|e| RtcError::Config(format!("cannot list network interfaces: {e}")))?;
    let mut out = Vec::new();
    for name in names {
        let mut found = false;
        for i in all.iter().filter(|i| &i.name == name) {
            found = true;
            let Some(addr) = i.addr else { continue };
            let ip = addr.ip();
            let usable = match ip {
                IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
                IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
            };
            if usable && !out.contains(&ip) {
                out.push(ip);
            }
        }
        if !found {
            let mut known: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
            known.sort_unstable();
            known.dedup();
            return Err(RtcError::Config(format!(
                "no network interface named \"{name}\" (there are: {})",
                known.join(", ")
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_and_unknown_names_are_refused_with_the_list() {
        let lo = interface_addrs(&["lo".to_string()]).unwrap();
        assert!(lo.iter().any(|ip| ip.is_loopback()), "{lo:?}");
        let err = interface_addrs(&["nosuchif0".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuchif0") && err.contains("lo"), "{err}");
    }
}
