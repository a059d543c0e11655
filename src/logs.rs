//! `piste logs`: a job's (or a pipeline's) log from a server, colours kept on a terminal only.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::output::{YELLOW, paint};
use crate::run::strip_ansi;

pub fn logs(url: &str, job: Option<i64>, pipeline: Option<i64>, follow: bool) -> anyhow::Result<ExitCode> {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let print = |text: &str| {
            let mut out = std::io::stdout().lock();
            let _ = if color { out.write_all(text.as_bytes()) } else { out.write_all(strip_ansi(text).as_bytes()) };
            let _ = out.flush();
        };
        let statuses = match (job, pipeline) {
            (Some(id), _) => vec![runner::follow::log(url, id, follow, print).await?],
            (None, Some(p)) => {
                let info = runner::follow::pipeline(url, p).await?;
                let mut out = Vec::new();
                for j in info.jobs {
                    eprintln!("{}", paint(&format!("── {} ({}) ──", j.name, j.stage), YELLOW));
                    out.push(runner::follow::log(url, j.id, follow, print).await?);
                }
                out
            }
            (None, None) => anyhow::bail!("name a job id, or `--pipeline ID`"),
        };
        let ok = statuses.iter().all(|s| matches!(s.as_str(), "success" | "skipped" | "manual"));
        Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}
