//! The fault-injection harness of fencelock, Jepsen-style without Jepsen: it starts a
//! cluster of real `fencelock serve` processes and the example fenced service
//! (`fenced-kv`) on loopback, runs a workload of concurrent clients (tasks and child
//! processes) that take locks and write through the fenced service with their tokens,
//! injects faults on a schedule drawn from a printed seed (kill -9, SIGSTOP, paused
//! clients, holders whose keepalives are lost, partitions and slow links through
//! in-process TCP proxies, whole-cluster restarts, a holder cut off from every node in a
//! network namespace, a suspended holder process, full disks on tmpfs data
//! directories), records the history as JSON lines, heals, and runs the checkers of
//! [`check`].
//!
//! `main` only parses arguments: [`run::run`] does a run, [`client::run_client`] is the
//! workload client run as a separate process.

pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod ports;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod workload;
