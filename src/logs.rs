//! `piste logs`: a job's (or a pipeline's) log from a server, colours kept on a terminal only.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use scheduler::JobStatus;

use crate::output::{YELLOW, paint};
use server::web::ansi::Renderer;

pub fn logs(server: &runner::follow::Server, job: Option<i64>, pipeline: Option<i64>, follow: bool) -> anyhow::Result<ExitCode> {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let statuses = match (job, pipeline) {
            (Some(id), _) => vec![show(server, id, follow, color).await?],
            (None, Some(p)) => {
                let mut info = runner::follow::pipeline(server, p).await?;
                // Right after a webhook the pipeline is recorded but not planned yet: when
                // following, wait for its jobs instead of printing nothing.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
                while follow
                    && info.jobs.is_empty()
                    && info.status == scheduler::PipelineStatus::Created
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    info = runner::follow::pipeline(server, p).await?;
                }
                if info.jobs.is_empty() {
                    eprintln!("pipeline {p} has no jobs ({})", info.status);
                    return Ok(if info.status == scheduler::PipelineStatus::Failed { ExitCode::from(1) } else { ExitCode::SUCCESS });
                }
                let mut out = Vec::new();
                for j in info.jobs {
                    eprintln!("{}", paint(&format!("── {} ({}) ──", j.name, j.stage), YELLOW));
                    out.push(show(server, j.id, follow, color).await?);
                }
                out
            }
            (None, None) => anyhow::bail!("name a job id, or `--pipeline ID`"),
        };
        let ok = statuses.iter().all(|s| matches!(s, JobStatus::Success | JobStatus::Skipped | JobStatus::Manual));
        Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// Prints one job's log and returns its final status. Without colour, escapes are stripped by a
/// streaming renderer, so a sequence split across two chunks of the stream is still removed.
async fn show(server: &runner::follow::Server, id: i64, follow: bool, color: bool) -> anyhow::Result<JobStatus> {
    let write = |text: &str| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    };
    let mut plain = (!color).then(Renderer::plain);
    let status = runner::follow::log(server, id, follow, |text| match plain.as_mut() {
        Some(r) => write(&r.push(text.as_bytes())),
        None => write(text),
    })
    .await?;
    if let Some(r) = plain.as_mut() {
        write(&r.finish());
    }
    Ok(status)
}
