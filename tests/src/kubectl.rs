//! The real kubectl (/usr/bin/kubectl, which runs the bundled client matching our /version)
//! for tests, with its discovery cache kept per test.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Whether kubectl is installed; under `CI=true` a missing kubectl fails the test.
#[must_use]
pub fn available() -> bool {
    if Path::new(KUBECTL).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{KUBECTL} is missing and CI=true forbids skipping"
    );
    eprintln!("\n!!!! SKIPPED kubectl end-to-end: {KUBECTL} not installed\n");
    false
}

pub struct Kubectl {
    pub kubeconfig: PathBuf,
    /// kubectl caches discovery under $HOME/.kube/cache; one home per test.
    pub home: PathBuf,
}

impl Kubectl {
    #[must_use]
    pub fn new(kubeconfig: &Path, home: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
        }
    }

    /// Runs kubectl; returns (success, stdout, stderr) and echoes both to the test log.
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .output()
            .expect("run kubectl");
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!("$ kubectl {}\n{o}{e}", args.join(" "));
        (out.status.success(), o, e)
    }

    /// Runs kubectl and panics unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, o, e) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\n{o}{e}");
        o
    }

    /// `kubectl ARGS -o json --show-managed-fields`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json", "--show-managed-fields"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl -o json")
    }
}
