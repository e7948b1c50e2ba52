//! `ssgan bench allreduce`: TCP ring all-reduce bandwidth between processes on this machine.
//!
//! The command starts `--ranks` copies of this binary as ring ranks. Each rank binds a
//! listener on 127.0.0.1, port 0, and prints its address. Once every address is known, the
//! parent sends the full list to each rank on its standard input, and rank 0's result lines
//! are copied to this process's standard output.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use ssgan_collective::{RingConfig, RingListener, RingMembership, bench_all_reduce};

const ADDRESS_PREFIX: &str = "address ";
const ROW_PREFIX: &str = "row ";

#[derive(Args)]
pub struct AllReduceArgs {
    /// Ring ranks (processes) to start; at least 2.
    #[arg(long, default_value_t = 2)]
    ranks: usize,
    /// Message sizes in bytes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096,65536,1048576,4194304,16777216,67108864"
    )]
    sizes: Vec<usize>,
    /// Timed all-reduces (and copies) per size.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Print one line of JSON per size instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of one rank process, started by `ssgan bench allreduce`.
#[derive(Args)]
pub struct RankArgs {
    #[arg(long)]
    rank: usize,
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    #[arg(long)]
    repeats: usize,
    /// Ring token shared by the ranks of one benchmark.
    #[arg(long)]
    token: u64,
}

/// Starts the ranks, relays the addresses and prints rank 0's rows.
pub fn run(args: AllReduceArgs) -> Result<i32> {
    anyhow::ensure!(
        args.ranks >= 2,
        "invalid --ranks {}: expected at least 2",
        args.ranks
    );
    anyhow::ensure!(
        args.repeats >= 1,
        "invalid --repeats 0: expected at least 1"
    );
    let mut ranks = (0..args.ranks)
        .map(|rank| spawn_rank(rank, &args))
        .collect::<Result<Vec<_>>>()?;
    let mut outputs: Vec<_> = ranks.iter_mut().map(take_stdout).collect::<Result<_>>()?;
    let addresses = outputs
        .iter_mut()
        .map(read_address)
        .collect::<Result<Vec<_>>>()?;
    let list = addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    for child in &mut ranks {
        let stdin = child.stdin.as_mut().context("rank has no standard input")?;
        writeln!(stdin, "{}", list.join(","))?;
    }
    if !args.json {
        println!("{:>12} {:>10} {:>14}", "bytes", "bus GB/s", "TCP copy GB/s");
    }
    print_rows(&mut outputs[0], args.json)?;
    wait_all(ranks)
}

/// Body of one rank: bind, report the address, read the peers, join and measure.
pub fn run_rank(args: RankArgs) -> Result<i32> {
    let listener = RingListener::bind("127.0.0.1:0".parse()?)?;
    println!("{ADDRESS_PREFIX}{}", listener.local_addr());
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let addresses = line
        .trim()
        .split(',')
        .map(|a| a.parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let membership = RingMembership {
        rank: args.rank,
        addresses,
        token: args.token,
    };
    let ring = listener.join(&membership, &RingConfig::default())?;
    let rows = bench_all_reduce(&ring, &args.sizes, args.repeats)?;
    if args.rank == 0 {
        for row in rows {
            println!("{ROW_PREFIX}{}", row.to_json_line());
        }
    }
    Ok(0)
}

fn spawn_rank(rank: usize, args: &AllReduceArgs) -> Result<Child> {
    let sizes: Vec<String> = args.sizes.iter().map(|s| s.to_string()).collect();
    Command::new(std::env::current_exe()?)
        .args(["bench", "allreduce-rank", "--rank", &rank.to_string()])
        .args([
            "--sizes",
            &sizes.join(","),
            "--repeats",
            &args.repeats.to_string(),
        ])
        .args(["--token", &std::process::id().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start ring rank {rank}"))
}

fn take_stdout(child: &mut Child) -> Result<BufReader<ChildStdout>> {
    let stdout = child.stdout.take().context("rank has no standard output")?;
    Ok(BufReader::new(stdout))
}

fn read_address(output: &mut BufReader<ChildStdout>) -> Result<SocketAddr> {
    let mut line = String::new();
    output.read_line(&mut line)?;
    match line.trim().strip_prefix(ADDRESS_PREFIX) {
        Some(address) => Ok(address.parse()?),
        None => bail!("a ring rank exited before reporting its address"),
    }
}

fn print_rows(output: &mut BufReader<ChildStdout>, json: bool) -> Result<()> {
    for line in output.lines() {
        let line = line?;
        let Some(row) = line.strip_prefix(ROW_PREFIX) else {
            continue;
        };
        if json {
            println!("{row}");
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(row)?;
        let number = |key: &str| value[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>12} {:>10.3} {:>14.3}",
            number("bytes"),
            number("bus_gbps"),
            number("tcp_copy_gbps")
        );
    }
    Ok(())
}

fn wait_all(ranks: Vec<Child>) -> Result<i32> {
    for (rank, mut child) in ranks.into_iter().enumerate() {
        let status = child.wait()?;
        if !status.success() {
            bail!("ring rank {rank} failed with {status}");
        }
    }
    Ok(0)
}
