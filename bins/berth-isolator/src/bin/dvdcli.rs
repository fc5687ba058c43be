//! `dvdcli`: berth's drop-in for the program Mesos's `docker/volume` isolator and
//! mesos-module-dvdi run (`berth_isolator::dvdcli` has the contract).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    berth_isolator::dvdcli::main(&args)
}
