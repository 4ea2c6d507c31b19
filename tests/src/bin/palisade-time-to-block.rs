//! `bench/time_to_block.sh`: report published -> address in the WAF IP set, p50/p99, at the
//! AWS write budget. See `palisade_tests::time_to_block`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use palisade_tests::time_to_block::{self, CaseResult};

#[derive(Debug, Parser)]
#[command(name = "palisade-time-to-block", about)]
struct Cli {
    /// Directory with the palisade-blocker binary (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Numbers of new attackers, one case each.
    #[arg(long, value_delimiter = ',', default_values_t = time_to_block::DEFAULT_CASES)]
    cases: Vec<usize>,
    /// Runs per case (the summary reports the median of each figure).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Output JSON.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => palisade_tests::default_bin_dir()?,
    };
    let mut cases = Vec::new();
    for &n in &cli.cases {
        let mut runs: Vec<CaseResult> = Vec::new();
        for run in 0..cli.runs.max(1) {
            let r = time_to_block::run_case(&bin_dir, n).await?;
            eprintln!(
                "attackers={n} run={run}: visible {}/{n}, p50 {:.0} ms, p99 {:.0} ms, {} UpdateIPSet, {} throttled",
                r.visible, r.p50_ms, r.p99_ms, r.update_ipset_calls, r.throttled
            );
            runs.push(r);
        }
        let m = |f: fn(&CaseResult) -> f64| median(runs.iter().map(f).collect());
        cases.push(serde_json::json!({
            "attackers": n,
            "median_p50_ms": m(|r| r.p50_ms),
            "median_p99_ms": m(|r| r.p99_ms),
            "median_update_ipset_calls": m(|r| r.update_ipset_calls as f64),
            "naive_update_ipset_calls": n,
            "runs": runs,
        }));
    }
    let out = cli.out.unwrap_or_else(time_to_block::default_output);
    let doc = serde_json::json!({
        "benchmark": "time_to_block",
        "what": "report published to JetStream -> address visible in GetIPSet, through palisade-blocker (AWS provider)",
        "emulator": "moto 5.2.5 behind palisade-tests FaultProxy (1 write/s, 10,000 entries/set)",
        "poll_interval_ms": 50,
        "cases": cases,
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {out:?}"))?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
