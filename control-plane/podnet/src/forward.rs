//! Letting pod traffic through the host: IPv4 forwarding on, and iptables rules that accept
//! forwarded traffic from and to the bridge (dockerd sets the FORWARD policy to DROP) and
//! masquerade pod traffic leaving the pod CIDR, so pods reach other hosts. Given the cluster
//! CIDR, traffic to it (pods of other nodes) keeps its source address instead.
//!
//! iptables is invoked as a program here (not netlink): its rules live in the kernel as
//! nftables/xtables blobs whose format belongs to the tool that wrote them, and using the
//! same tool as dockerd keeps both consistent.

use std::process::Command;

use ipnet::Ipv4Net;

use crate::{Error, Result, names::validate_ifname};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// Docker's chain for user rules, evaluated before its own; used when it exists because
/// dockerd re-creates FORWARD's contents on restart but leaves DOCKER-USER alone.
const DOCKER_USER: &str = "DOCKER-USER";
const FORWARD: &str = "FORWARD";
/// Bound on duplicate removal, in case a rule reappears while being deleted.
const MAX_DUPLICATES: usize = 64;

/// One iptables rule: its table, chain and match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    pub table: &'static str,
    pub chain: &'static str,
    pub spec: Vec<String>,
}

impl ForwardRule {
    /// The iptables arguments for `op` (`-C`, `-D`, or `-I`/`-A` for adding).
    fn args(&self, op: &str) -> Vec<String> {
        let mut args = vec![
            "-w".to_owned(),
            "-t".to_owned(),
            self.table.to_owned(),
            op.to_owned(),
            self.chain.to_owned(),
        ];
        args.extend(self.spec.iter().cloned());
        args
    }

    /// Filter rules go first in their chain (before Docker's RETURN/DROP); NAT rules are
    /// appended after Docker's own.
    fn add_op(&self) -> &'static str {
        if self.table == "filter" { "-I" } else { "-A" }
    }
}

/// The rules [`enable_forwarding`] installs, with the filter rules in `filter_chain`.
#[must_use]
pub fn forwarding_rules(
    bridge: &str,
    pod_cidr: Ipv4Net,
    filter_chain: &'static str,
) -> Vec<ForwardRule> {
    cluster_forwarding_rules(bridge, pod_cidr, None, filter_chain)
}

/// The rules [`enable_cluster_forwarding`] installs: those of [`forwarding_rules`], except
/// that traffic to `cluster_cidr` (when given) is not masqueraded.
#[must_use]
pub fn cluster_forwarding_rules(
    bridge: &str,
    pod_cidr: Ipv4Net,
    cluster_cidr: Option<Ipv4Net>,
    filter_chain: &'static str,
) -> Vec<ForwardRule> {
    let comment = comment(bridge);
    let tagged = |mut spec: Vec<String>| {
        spec.extend(["-m", "comment", "--comment", &comment].map(String::from));
        spec
    };
    let cidr = pod_cidr.trunc().to_string();
    // The cluster CIDR holds the pod CIDR, so one `! -d` covers both.
    let local = cluster_cidr.unwrap_or(pod_cidr).trunc().to_string();
    vec![
        ForwardRule {
            table: "filter",
            chain: filter_chain,
            spec: tagged(["-i", bridge].map(String::from).to_vec())
                .into_iter()
                .chain(["-j", "ACCEPT"].map(String::from))
                .collect(),
        },
        ForwardRule {
            table: "filter",
            chain: filter_chain,
            spec: tagged(["-o", bridge].map(String::from).to_vec())
                .into_iter()
                .chain(["-j", "ACCEPT"].map(String::from))
                .collect(),
        },
        ForwardRule {
            table: "nat",
            chain: "POSTROUTING",
            spec: tagged(["-s", &cidr, "!", "-d", &local].map(String::from).to_vec())
                .into_iter()
                .chain(["-j", "MASQUERADE"].map(String::from))
                .collect(),
        },
    ]
}

/// The comment that tags the rules of `bridge`.
fn comment(bridge: &str) -> String {
    format!("kproxy podnet {bridge}")
}

/// Turns on IPv4 forwarding and adds the rules of [`forwarding_rules`] that are missing
/// (checked with `iptables -C`), in DOCKER-USER if that chain exists, else FORWARD.
/// Idempotent. Blocking (runs iptables); call it from a blocking context.
pub fn enable_forwarding(bridge: &str, pod_cidr: Ipv4Net) -> Result<()> {
    enable_cluster_forwarding(bridge, pod_cidr, None)
}

/// [`enable_forwarding`] with the rules of [`cluster_forwarding_rules`]. A masquerade rule
/// of `bridge` left by an earlier run with another cluster CIDR (or none) is removed.
pub fn enable_cluster_forwarding(
    bridge: &str,
    pod_cidr: Ipv4Net,
    cluster_cidr: Option<Ipv4Net>,
) -> Result<()> {
    validate_ifname(bridge)?;
    if let Some(c) = cluster_cidr
        && !c.contains(&pod_cidr)
    {
        return Err(Error::InvalidConfig(format!(
            "the cluster CIDR {c} does not contain the pod CIDR {pod_cidr}"
        )));
    }
    std::fs::write(IP_FORWARD, "1").map_err(|source| Error::Io {
        what: "enabling IPv4 forwarding",
        path: IP_FORWARD.into(),
        source,
    })?;
    let chain = if chain_exists("filter", DOCKER_USER)? {
        DOCKER_USER
    } else {
        FORWARD
    };
    let rules = cluster_forwarding_rules(bridge, pod_cidr, cluster_cidr, chain);
    for stale in tagged_nat_rules(bridge)? {
        if !rules.contains(&stale) {
            iptables(&stale.args("-D"))?;
        }
    }
    for rule in rules {
        if !rule_exists(&rule)? {
            iptables(&rule.args(rule.add_op()))?;
        }
    }
    Ok(())
}

/// The NAT POSTROUTING rules tagged with `bridge`'s comment, as `iptables -S` lists them.
fn tagged_nat_rules(bridge: &str) -> Result<Vec<ForwardRule>> {
    let args = ["-w", "-t", "nat", "-S", "POSTROUTING"].map(String::from);
    let out = match run_stdout(&args)? {
        (Some(0), out) => out,
        (code, stderr) => {
            return Err(Error::Iptables {
                args: args.join(" "),
                reason: format!("exit {code:?}: {stderr}"),
            });
        }
    };
    Ok(parse_tagged(&out, "POSTROUTING", &comment(bridge))
        .into_iter()
        .map(|spec| ForwardRule {
            table: "nat",
            chain: "POSTROUTING",
            spec,
        })
        .collect())
}

/// The match/target arguments of the `-A chain` lines of `iptables -S` output whose
/// `--comment` is `comment`.
fn parse_tagged(listing: &str, chain: &str, comment: &str) -> Vec<Vec<String>> {
    listing
        .lines()
        .map(split_words)
        .filter(|w| w.len() > 2 && w[0] == "-A" && w[1] == chain)
        .filter(|w| w.windows(2).any(|p| p[0] == "--comment" && p[1] == comment))
        .map(|w| w[2..].to_vec())
        .collect()
}

/// Splits an `iptables -S` line into words; double quotes group (with `\` escapes), as
/// iptables quotes comments.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut started) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => (quoted, started) = (!quoted, true),
            '\\' if quoted => cur.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if started || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                started = false;
            }
            c => cur.push(c),
        }
    }
    if started || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Removes every copy of the rules [`enable_forwarding`] adds for `bridge` and `pod_cidr`,
/// from DOCKER-USER and FORWARD alike. Leaves IPv4 forwarding on (dockerd needs it too).
pub fn disable_forwarding(bridge: &str, pod_cidr: Ipv4Net) -> Result<()> {
    validate_ifname(bridge)?;
    let mut chains = vec![FORWARD];
    if chain_exists("filter", DOCKER_USER)? {
        chains.push(DOCKER_USER);
    }
    let mut rules: Vec<ForwardRule> = Vec::new();
    for chain in chains {
        for rule in forwarding_rules(bridge, pod_cidr, chain) {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    // Masquerade rules of any cluster CIDR an earlier run was given.
    for rule in tagged_nat_rules(bridge)? {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    for rule in rules {
        for _ in 0..MAX_DUPLICATES {
            if !rule_exists(&rule)? {
                break;
            }
            iptables(&rule.args("-D"))?;
        }
    }
    Ok(())
}

fn chain_exists(table: &str, chain: &str) -> Result<bool> {
    let status = run(&["-w", "-t", table, "-S", chain].map(String::from))?.0;
    Ok(status == Some(0))
}

/// `iptables -C`: exit 0 = present, 1 = absent, anything else is an error.
fn rule_exists(rule: &ForwardRule) -> Result<bool> {
    let args = rule.args("-C");
    match run(&args)? {
        (Some(0), _) => Ok(true),
        (Some(1), _) => Ok(false),
        (code, stderr) => Err(Error::Iptables {
            args: args.join(" "),
            reason: format!("exit {code:?}: {stderr}"),
        }),
    }
}

fn iptables(args: &[String]) -> Result<()> {
    match run(args)? {
        (Some(0), _) => Ok(()),
        (code, stderr) => Err(Error::Iptables {
            args: args.join(" "),
            reason: format!("exit {code:?}: {stderr}"),
        }),
    }
}

fn run(args: &[String]) -> Result<(Option<i32>, String)> {
    let out = output(args)?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    ))
}

/// Like [`run`], with stdout on success and stderr otherwise.
fn run_stdout(args: &[String]) -> Result<(Option<i32>, String)> {
    let out = output(args)?;
    let text = if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    };
    Ok((
        out.status.code(),
        String::from_utf8_lossy(text).trim().to_owned(),
    ))
}

fn output(args: &[String]) -> Result<std::process::Output> {
    Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| Error::Iptables {
            args: args.join(" "),
            reason: format!("cannot run iptables: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_accept_both_directions_and_masquerade_leaving_traffic() {
        let rules = forwarding_rules("kbr0", "10.244.0.7/24".parse().unwrap(), DOCKER_USER);
        let lines: Vec<String> = rules.iter().map(|r| r.args(r.add_op()).join(" ")).collect();
        let c = r"-m comment --comment kproxy podnet kbr0";
        assert_eq!(
            lines,
            [
                format!("-w -t filter -I DOCKER-USER -i kbr0 {c} -j ACCEPT"),
                format!("-w -t filter -I DOCKER-USER -o kbr0 {c} -j ACCEPT"),
                format!(
                    "-w -t nat -A POSTROUTING -s 10.244.0.0/24 ! -d 10.244.0.0/24 {c} -j MASQUERADE"
                ),
            ]
        );
        assert_eq!(rules[0].args("-C")[3], "-C");
        assert_eq!(rules[2].args("-D")[4], "POSTROUTING");
    }

    #[test]
    fn cluster_traffic_keeps_its_source() {
        let cidr = "10.244.1.0/24".parse().unwrap();
        let rules = cluster_forwarding_rules(
            "kbr0",
            cidr,
            Some("10.244.0.0/16".parse().unwrap()),
            FORWARD,
        );
        assert_eq!(
            rules[2].spec[..5],
            ["-s", "10.244.1.0/24", "!", "-d", "10.244.0.0/16"].map(String::from)
        );
        assert_eq!(rules[..2], forwarding_rules("kbr0", cidr, FORWARD)[..2]);
    }

    #[test]
    fn tagged_rules_are_read_back_from_the_listing() {
        let listing = "-P POSTROUTING ACCEPT\n\
            -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
            -A POSTROUTING -s 10.244.1.0/24 ! -d 10.244.0.0/16 -m comment --comment \"kproxy podnet kbr0\" -j MASQUERADE\n\
            -A POSTROUTING -s 10.9.0.0/24 ! -d 10.9.0.0/24 -m comment --comment \"kproxy podnet kbr01\" -j MASQUERADE";
        let found = parse_tagged(listing, "POSTROUTING", &comment("kbr0"));
        let want = cluster_forwarding_rules(
            "kbr0",
            "10.244.1.0/24".parse().unwrap(),
            Some("10.244.0.0/16".parse().unwrap()),
            FORWARD,
        );
        assert_eq!(found, vec![want[2].spec.clone()]);
        assert_eq!(
            split_words(r#"a "b \" c"  d"#),
            ["a", "b \" c", "d"].map(String::from)
        );
    }

    #[test]
    fn rules_follow_the_chosen_chain() {
        let rules = forwarding_rules("b", "10.0.0.0/16".parse().unwrap(), FORWARD);
        assert!(
            rules
                .iter()
                .filter(|r| r.table == "filter")
                .all(|r| r.chain == FORWARD)
        );
    }

    #[test]
    fn invalid_bridge_names_are_rejected_before_touching_anything() {
        let cidr = "10.0.0.0/24".parse().unwrap();
        assert!(matches!(
            enable_forwarding("a bridge name that is too long", cidr),
            Err(Error::InvalidIfname { .. })
        ));
        assert!(matches!(
            disable_forwarding("", cidr),
            Err(Error::InvalidIfname { .. })
        ));
    }
}
