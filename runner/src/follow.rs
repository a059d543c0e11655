//! `piste logs`: read or follow a job's log from a server (Server-Sent Events, resumed by offset
//! after a dropped connection), and the job's final status.

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot reach `{url}`: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("`{url}` answered {status}: {body}")]
    Status { url: String, status: u16, body: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub stage: String,
    pub status: String,
    pub attempt: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PipelineInfo {
    pub id: i64,
    pub status: String,
    pub jobs: Vec<JobInfo2>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo2 {
    pub id: i64,
    pub name: String,
    pub stage: String,
    pub status: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().unwrap_or_default()
}

async fn get_json<T: serde::de::DeserializeOwned>(url: String) -> Result<T, FollowError> {
    let r = client().get(&url).send().await.map_err(|source| FollowError::Http { url: url.clone(), source })?;
    if !r.status().is_success() {
        let status = r.status().as_u16();
        return Err(FollowError::Status { url, status, body: r.text().await.unwrap_or_default() });
    }
    r.json().await.map_err(|source| FollowError::Http { url, source })
}

pub async fn job(base: &str, id: i64) -> Result<JobInfo, FollowError> {
    get_json(format!("{}/api/v1/jobs/{id}", base.trim_end_matches('/'))).await
}

pub async fn pipeline(base: &str, id: i64) -> Result<PipelineInfo, FollowError> {
    get_json(format!("{}/api/v1/pipelines/{id}", base.trim_end_matches('/'))).await
}

/// Prints (through `out`) the log of job `id` as stored, or follows it until the job ends when
/// `follow`. Returns the job's final status.
pub async fn log(base: &str, id: i64, follow: bool, mut out: impl FnMut(&str)) -> Result<String, FollowError> {
    let base = base.trim_end_matches('/');
    if !follow {
        let url = format!("{base}/api/v1/jobs/{id}/log");
        let r = client().get(&url).send().await.map_err(|source| FollowError::Http { url: url.clone(), source })?;
        if !r.status().is_success() {
            let status = r.status().as_u16();
            return Err(FollowError::Status { url, status, body: r.text().await.unwrap_or_default() });
        }
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| FollowError::Http { url: url.clone(), source })?;
            out(&String::from_utf8_lossy(&chunk));
        }
        return Ok(job(base, id).await?.status);
    }
    let mut offset: u64 = 0;
    let mut failures = 0u32;
    loop {
        let url = format!("{base}/api/v1/jobs/{id}/log/stream?offset={offset}");
        let resp = match client().get(&url).header("Accept", "text/event-stream").send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status().as_u16();
                return Err(FollowError::Status { url, status, body: r.text().await.unwrap_or_default() });
            }
            Err(source) => {
                failures += 1;
                if failures > 30 {
                    return Err(FollowError::Http { url, source });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        failures = 0;
        let mut body = resp.bytes_stream();
        let mut pending = String::new();
        let (mut event, mut data) = (String::new(), String::new());
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    // End of one event.
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
                        if event == "end" {
                            return Ok(v["status"].as_str().unwrap_or("unknown").to_string());
                        }
                        if let Some(text) = v["text"].as_str() {
                            out(text);
                        }
                        if let Some(next) = v["offset"].as_u64() {
                            offset = next;
                        }
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                }
            }
        }
        // The connection dropped: resume from the last offset received.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
