//! kube-proxy shaped rule sets (iptables-restore and `nft -f` input) for N services, the
//! single-service changes, and the tools that load and remove them in the node namespace.

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use kproxy_tests::lab::{BACKEND_PORT, backend_ip};

use super::{
    BACKENDS, SVC_PORT,
    process::{run_quiet, run_with_input},
    services::vip,
    topology::Topo,
};

fn svc_chain(i: usize) -> String {
    format!("KUBE-SVC-{i:016}")
}

fn sep_chain(i: usize, b: usize) -> String {
    format!("KUBE-SEP-{i:012}{b:04}")
}

/// kube-proxy's iptables shape for services 1..=n (iptables-restore input).
fn iptables_rules(n: usize) -> String {
    let mut chains = String::with_capacity(n * 200);
    let mut rules = String::with_capacity(n * 700);
    chains
        .push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    rules.push_str("-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n");
    for i in 1..=n {
        let svc = svc_chain(i);
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m tcp --dport {SVC_PORT} -j {svc}",
            vip(i)
        );
        for b in 0..BACKENDS {
            let sep = sep_chain(i, b);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            match b {
                0 => {
                    let _ = writeln!(
                        rules,
                        "-A {svc} -m statistic --mode random --probability 0.25000000000 -j {sep}"
                    );
                }
                1 => {
                    let _ = writeln!(
                        rules,
                        "-A {svc} -m statistic --mode random --probability 0.33333333349 -j {sep}"
                    );
                }
                2 => {
                    let _ = writeln!(
                        rules,
                        "-A {svc} -m statistic --mode random --probability 0.50000000000 -j {sep}"
                    );
                }
                _ => {
                    let _ = writeln!(rules, "-A {svc} -j {sep}");
                }
            }
            let _ = writeln!(
                rules,
                "-A {sep} -p tcp -m tcp -j DNAT --to-destination {}:{BACKEND_PORT}",
                backend_ip(b)
            );
        }
    }
    chains.push_str(&rules);
    chains.push_str("COMMIT\n");
    chains
}

/// `iptables-restore --noflush` input that points service `i` at backend `b` only.
fn iptables_change(i: usize, b: usize) -> String {
    let svc = svc_chain(i);
    format!(
        "*nat\n:{svc} - [0:0]\n-A {svc} -j {}\nCOMMIT\n",
        sep_chain(i, b)
    )
}

const NFT_TABLE: &str = "kproxy-bench";

/// kube-proxy's nftables shape for services 1..=n (`nft -f` input).
fn nft_rules(n: usize) -> String {
    let mut s = String::with_capacity(n * 700);
    let _ = write!(
        s,
        "table ip {NFT_TABLE} {{\n map service-ips {{\n  type ipv4_addr . inet_proto . inet_service : verdict\n  elements = {{\n"
    );
    for i in 1..=n {
        let sep = if i == n { "\n" } else { ",\n" };
        let _ = write!(
            s,
            "   {} . tcp . {SVC_PORT} : goto service-{i}{sep}",
            vip(i)
        );
    }
    s.push_str("  }\n }\n");
    s.push_str(" chain services {\n  ip daddr . meta l4proto . th dport vmap @service-ips\n }\n");
    s.push_str(
        " chain nat-prerouting {\n  type nat hook prerouting priority -100; policy accept;\n  jump services\n }\n",
    );
    s.push_str(
        " chain nat-output {\n  type nat hook output priority -100; policy accept;\n  jump services\n }\n",
    );
    for i in 1..=n {
        let arms: Vec<String> = (0..BACKENDS)
            .map(|b| format!("{b} : goto endpoint-{i}-{b}"))
            .collect();
        let _ = write!(
            s,
            " chain service-{i} {{\n  numgen random mod {BACKENDS} vmap {{ {} }}\n }}\n",
            arms.join(", ")
        );
        for b in 0..BACKENDS {
            let _ = write!(
                s,
                " chain endpoint-{i}-{b} {{\n  meta l4proto tcp dnat to {}:{BACKEND_PORT}\n }}\n",
                backend_ip(b)
            );
        }
    }
    s.push_str("}\n");
    s
}

/// An incremental `nft -f` that points service `i` at backend `b` only.
fn nft_change(i: usize, b: usize) -> String {
    format!(
        "flush chain ip {NFT_TABLE} service-{i}\n\
         add rule ip {NFT_TABLE} service-{i} numgen random mod 1 vmap {{ 0 : goto endpoint-{i}-{b} }}\n"
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    IptablesNft,
    Nft,
    IptablesLegacy,
}

impl RuleKind {
    pub const fn key(self) -> &'static str {
        match self {
            Self::IptablesNft => "iptables-nft",
            Self::Nft => "nftables",
            Self::IptablesLegacy => "iptables-legacy",
        }
    }

    pub const fn direct_key(self) -> &'static str {
        match self {
            Self::IptablesNft => "direct+iptables-nft",
            Self::Nft => "direct+nftables",
            Self::IptablesLegacy => "direct+iptables-legacy",
        }
    }

    pub fn load(self, topo: &Topo, n: usize) -> Result<Duration> {
        match self {
            Self::IptablesNft | Self::IptablesLegacy => {
                let text = iptables_rules(n);
                let tool = if self == Self::IptablesNft {
                    "iptables-nft-restore"
                } else {
                    "iptables-legacy-restore"
                };
                run_with_input(&mut topo.node.cmd(tool), &text)
            }
            Self::Nft => {
                let text = nft_rules(n);
                run_with_input(topo.node.cmd("nft").args(["-f", "-"]), &text)
            }
        }
    }

    pub fn change(self, topo: &Topo, i: usize, backend: usize) -> Result<Duration> {
        match self {
            Self::IptablesNft => run_with_input(
                topo.node.cmd("iptables-nft-restore").arg("--noflush"),
                &iptables_change(i, backend),
            ),
            Self::IptablesLegacy => run_with_input(
                topo.node.cmd("iptables-legacy-restore").arg("--noflush"),
                &iptables_change(i, backend),
            ),
            Self::Nft => run_with_input(
                topo.node.cmd("nft").args(["-f", "-"]),
                &nft_change(i, backend),
            ),
        }
    }

    /// Removes everything `load` created.
    pub fn unload(self, topo: &Topo) -> Result<()> {
        match self {
            Self::IptablesNft => {
                run_quiet(topo.node.cmd("nft").args(["delete", "table", "ip", "nat"]))
            }
            Self::Nft => run_quiet(
                topo.node
                    .cmd("nft")
                    .args(["delete", "table", "ip", NFT_TABLE]),
            ),
            Self::IptablesLegacy => {
                run_quiet(topo.node.cmd("iptables-legacy").args(["-t", "nat", "-F"]))?;
                run_quiet(topo.node.cmd("iptables-legacy").args(["-t", "nat", "-X"]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_shapes() {
        let r = iptables_rules(2);
        assert!(r.contains(
            "-A KUBE-SERVICES -d 10.104.0.2/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-0000000000000002"
        ));
        assert_eq!(r.matches("--probability").count(), 6);
        assert!(r.ends_with("COMMIT\n"));
        assert_eq!(
            iptables_change(2, 3),
            "*nat\n:KUBE-SVC-0000000000000002 - [0:0]\n-A KUBE-SVC-0000000000000002 -j KUBE-SEP-0000000000020003\nCOMMIT\n"
        );
        let n = nft_rules(2);
        assert!(n.contains("10.104.0.2 . tcp . 80 : goto service-2\n"));
        assert!(n.contains("numgen random mod 4 vmap"));
        assert!(nft_change(2, 1).contains("vmap { 0 : goto endpoint-2-1 }"));
    }
}
