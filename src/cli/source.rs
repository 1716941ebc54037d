//! source add | list | remove: the accounts `gitvault backup` backs up when given no URL.

use anyhow::Result;
use clap::Subcommand;

use gitvault::provider::SourceConfig;

use super::{Ctx, EXIT_OK};

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum SourceCommand {
    /// Add an account: every repository of an organisation or user, with metadata.
    Add {
        name: String,
        /// github, gitlab, bitbucket or gitea (also Forgejo and Codeberg).
        #[arg(long)]
        provider: String,
        /// The organisation, group (GitLab: `group/subgroup` paths too), workspace or user.
        #[arg(long)]
        owner: String,
        /// API base URL: GitHub Enterprise Server (https://HOST/api/v3), self-hosted GitLab
        /// (https://HOST/api/v4), Gitea/Forgejo (https://HOST/api/v1), tests.
        #[arg(long)]
        api_url: Option<String>,
        /// Where the repositories' git URLs live when not on the API's host (an origin such as
        /// https://git.example.com:8443): clone URLs the API lists elsewhere are refused, and
        /// git credentials go to this origin only.
        #[arg(long)]
        git_url: Option<String>,
        /// Name of the environment variable holding the token (read at run time, never stored).
        #[arg(long)]
        token_env: Option<String>,
        /// Name of the environment variable holding the user name for Basic auth (Bitbucket:
        /// the Atlassian e-mail with an API token, the user name with an app password).
        #[arg(long)]
        username_env: Option<String>,
        /// GitHub App id; with --app-key-file, authenticates as the app's installation on
        /// --owner (tokens are renewed during long runs).
        #[arg(long)]
        app_id: Option<u64>,
        /// The GitHub App's private key (PEM), read at run time.
        #[arg(long)]
        app_key_file: Option<String>,
        /// Only repositories whose name (or owner/name) matches; repeatable.
        #[arg(long)]
        include: Vec<String>,
        /// Skip repositories whose name (or owner/name) matches; repeatable.
        #[arg(long)]
        exclude: Vec<String>,
        /// Skip forks.
        #[arg(long)]
        no_forks: bool,
        /// Skip archived repositories.
        #[arg(long)]
        no_archived: bool,
    },
    /// List the sources.
    List,
    /// Remove a source (its snapshots stay in the vault).
    Remove { name: String },
}

pub fn run(ctx: &Ctx, cmd: SourceCommand) -> Result<i32> {
    let mut vault = ctx.open()?;
    match cmd {
        SourceCommand::Add {
            name,
            provider,
            owner,
            api_url,
            git_url,
            token_env,
            username_env,
            app_id,
            app_key_file,
            include,
            exclude,
            no_forks,
            no_archived,
        } => {
            let lock = vault.lock()?;
            let source = SourceConfig {
                name: name.clone(),
                provider,
                owner,
                api_url,
                token_env,
                username_env,
                app_id,
                // Runs may start from another directory (cron, systemd).
                app_key_file: app_key_file
                    .map(|f| std::path::absolute(&f).map(|p| p.display().to_string()))
                    .transpose()?,
                include,
                exclude,
                no_forks,
                no_archived,
                retention: None,
                git_url,
                http: Default::default(),
            };
            vault.add_source(source, &lock)?;
            ctx.out.print(&serde_json::json!({ "added": name }), || {
                format!("added source {name}; `gitvault backup` now backs it up\n")
            });
        }
        SourceCommand::List => {
            let sources = vault.config().sources.clone();
            ctx.out.print(&sources, || {
                sources
                    .iter()
                    .map(|s| {
                        format!(
                            "{:<16} {:<8} {:<24} {}\n",
                            s.name,
                            s.provider,
                            s.owner,
                            s.api_url.as_deref().unwrap_or("(default API)")
                        )
                    })
                    .collect()
            });
        }
        SourceCommand::Remove { name } => {
            let lock = vault.lock()?;
            vault.remove_source(&name, &lock)?;
            ctx.out.print(&serde_json::json!({ "removed": name }), || {
                format!("removed source {name}\n")
            });
        }
    }
    Ok(EXIT_OK)
}
