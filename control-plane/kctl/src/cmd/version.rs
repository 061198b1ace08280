//! `kctl version`: the client's version and, unless `--client`, the server's.

use anyhow::Result;

use crate::client::{Ctx, GlobalOpts};
use crate::output;

#[derive(clap::Args, Debug, Clone)]
pub struct VersionArgs {
    /// Only the client version (no server needed).
    #[arg(long)]
    pub client: bool,
}

pub fn client_line() -> String {
    format!("Client Version: v{}\n", env!("CARGO_PKG_VERSION"))
}

pub async fn run(global: &GlobalOpts, args: &VersionArgs) -> Result<()> {
    output::emit(&client_line())?;
    if args.client {
        return Ok(());
    }
    let ctx = Ctx::connect(global).await?;
    let info = ctx.client.apiserver_version().await?;
    output::emit(&format!("Server Version: {}\n", info.git_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_line_names_this_build() {
        assert_eq!(
            client_line(),
            format!("Client Version: v{}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}
