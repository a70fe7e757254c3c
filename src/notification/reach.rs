//! Whether each channel can reach its host under the unit's address policy (systemd's
//! `IPAddressAllow=`/`IPAddressDeny=`). Under the shipped unit only localhost is allowed, so a
//! Slack, PagerDuty, GitHub, GitLab or Jira channel, or a remote SMTP relay, can never
//! deliver; the preflight names them at start, reload and `--check-config` (which systemd runs
//! inside the unit's sandbox as `ExecStartPre=`).

use std::net::IpAddr;

use super::config::{ChannelConfig, ChannelKind};

/// An address range (`192.0.2.0/24`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    addr: IpAddr,
    prefix: u8,
}

impl Range {
    fn parse(s: &str) -> Option<Range> {
        match s {
            "any" => return None,
            "localhost" => return None,
            _ => {}
        }
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() { max } else { p.parse().ok()? };
        (prefix <= max).then_some(Range { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip {
                IpAddr::V4(v) => (u32::from(v) as u128, 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        };
        let ((a, width), (b, other)) = (bits(self.addr), bits(ip));
        if width != other {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        shift >= width || (a >> shift) == (b >> shift)
    }
}

/// The address policy of the unit this process runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<Range>,
    deny: Vec<Range>,
}

impl AddressPolicy {
    /// From `systemctl show -p IPAddressAllow -p IPAddressDeny` output (`KEY=a b c` lines;
    /// systemd writes `any` as 0.0.0.0/0 and ::/0, `localhost` as 127.0.0.0/8 and ::1/128).
    pub fn parse(show: &str) -> AddressPolicy {
        let mut p = AddressPolicy::default();
        for line in show.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let list = match key.trim() {
                "IPAddressAllow" => &mut p.allow,
                "IPAddressDeny" => &mut p.deny,
                _ => continue,
            };
            for w in value.split_whitespace() {
                match w {
                    "any" => {
                        list.extend(["0.0.0.0/0", "::/0"].iter().filter_map(|s| Range::parse(s)))
                    }
                    "localhost" => list.extend(
                        ["127.0.0.0/8", "::1/128"]
                            .iter()
                            .filter_map(|s| Range::parse(s)),
                    ),
                    other => list.extend(Range::parse(other)),
                }
            }
        }
        p
    }

    /// The policy of this process's systemd unit; none (everything allowed) outside one.
    pub fn current() -> AddressPolicy {
        if std::env::var_os("INVOCATION_ID").is_none() {
            return AddressPolicy::default();
        }
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let Some(unit) = cgroup
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .find(|u| u.ends_with(".service"))
        else {
            return AddressPolicy::default();
        };
        let out = std::process::Command::new("systemctl")
            .args(["show", "-p", "IPAddressAllow", "-p", "IPAddressDeny", unit])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                AddressPolicy::parse(&String::from_utf8_lossy(&o.stdout))
            }
            _ => AddressPolicy::default(),
        }
    }

    /// Whether packets to `ip` are dropped: denied and not allowed (systemd's rule).
    fn blocks(&self, ip: IpAddr) -> bool {
        !self.allow.iter().any(|r| r.contains(ip)) && self.deny.iter().any(|r| r.contains(ip))
    }

    /// Whether public addresses are blocked, which a host name other than localhost is
    /// taken to have (two well-known public resolvers stand for them; nothing is sent).
    fn blocks_public(&self) -> bool {
        let public = [
            IpAddr::from([1, 1, 1, 1]),
            IpAddr::from([0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111]),
        ];
        public.iter().all(|ip| self.blocks(*ip))
    }
}

/// The host a channel connects to, if it connects anywhere.
fn hosts(c: &ChannelConfig) -> Vec<String> {
    let url = match c.kind {
        ChannelKind::Log | ChannelKind::Exec => return Vec::new(),
        ChannelKind::Email => {
            return vec![c.smtp_host.clone().unwrap_or_else(|| "localhost".into())];
        }
        ChannelKind::Alertmanager => {
            return c.peers().iter().filter_map(|u| url_host(u)).collect();
        }
        ChannelKind::Pagerduty => c
            .url
            .clone()
            .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into()),
        ChannelKind::Github => c
            .url
            .clone()
            .unwrap_or_else(|| "https://api.github.com".into()),
        _ => match c.url.clone() {
            Some(u) => u,
            None => return Vec::new(),
        },
    };
    url_host(&url).into_iter().collect()
}

fn url_host(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
}

/// (channel, problem) for each channel whose host the policy blocks.
pub fn unreachable(channels: &[ChannelConfig], policy: &AddressPolicy) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (c, h) in channels
        .iter()
        .flat_map(|c| hosts(c).into_iter().map(move |h| (c, h)))
    {
        let blocked = match h.parse::<IpAddr>() {
            Ok(ip) => policy.blocks(ip),
            Err(_) if h == "localhost" => false,
            Err(_) => policy.blocks_public(),
        };
        if blocked {
            out.push((
                c.id.clone(),
                format!(
                    "host {h} is outside the unit's IPAddressAllow= (enable the egress drop-in, dropins/egress.conf)"
                ),
            ));
        }
    }
    out
}

/// Checks the channels against this process's unit, logs each problem and keeps them for
/// `/v1/status`.
pub fn publish(channels: &[ChannelConfig], telemetry: &crate::telemetry::Telemetry) {
    let found = unreachable(channels, &AddressPolicy::current());
    for (c, problem) in &found {
        tracing::warn!(channel = %c, problem = %problem, "channel preflight");
    }
    *telemetry
        .unreachable
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = found;
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = "IPAddressAllow=127.0.0.0/8 ::1/128\nIPAddressDeny=0.0.0.0/0 ::/0\n";

    fn channel(text: &str) -> ChannelConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_shipped_policy_blocks_every_channel_that_leaves_the_host() {
        let p = AddressPolicy::parse(SHIPPED);
        let channels = [
            channel("id = \"slack\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/x\""),
            channel("id = \"pd\"\nkind = \"pagerduty\"\nrouting_key = \"k\""),
            channel("id = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9093/x\""),
            channel("id = \"am\"\nkind = \"alertmanager\"\nurl = \"http://[::1]:9093\""),
            channel("id = \"lan\"\nkind = \"webhook\"\nurl = \"http://192.0.2.10/x\""),
            channel(
                "id = \"mail\"\nkind = \"email\"\nsmtp_host = \"localhost\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
            ),
            channel("id = \"log\"\nkind = \"log\""),
        ];
        let names: Vec<String> = unreachable(&channels, &p)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(names, ["slack", "pd", "lan"]);
        // With the egress drop-in (IPAddressDeny= emptied) nothing is blocked.
        let open = AddressPolicy::parse("IPAddressAllow=0.0.0.0/0 ::/0\nIPAddressDeny=\n");
        assert!(unreachable(&channels, &open).is_empty());
        // Outside systemd: no policy.
        assert!(unreachable(&channels, &AddressPolicy::default()).is_empty());
        // A range allowed for the LAN lets that channel through, not the others.
        let lan = AddressPolicy::parse(
            "IPAddressAllow=127.0.0.0/8 ::1/128 192.0.2.0/24\nIPAddressDeny=0.0.0.0/0 ::/0\n",
        );
        let names: Vec<String> = unreachable(&channels, &lan)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(names, ["slack", "pd"]);
    }
}
