//! `palisadectl pki init`: a development PKI for a local cluster (no cluster needed).

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use crate::input::local;
use crate::report::{Failure, Report};

#[derive(Debug, Subcommand)]
pub(crate) enum PkiCmd {
    /// Write a CA, controller/edge/admin certificates and a data key into a directory.
    Init {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Controller node ids.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        controllers: Vec<u64>,
        /// Edge ids.
        #[arg(long, value_delimiter = ',', default_value = "edge-1,edge-2")]
        edges: Vec<String>,
    },
}

pub(crate) fn run(cmd: PkiCmd) -> Result<Report, Failure> {
    match cmd {
        PkiCmd::Init {
            dir,
            controllers,
            edges,
        } => {
            palisade_link::pki::init_dir(&dir, &controllers, &edges)
                .map_err(|e| local(format!("{e:#}")))?;
            Ok(Report::new(
                format!(
                    "wrote a development CA, certificates and a data key to {}\n",
                    dir.display()
                ),
                json!({ "dir": dir }),
            ))
        }
    }
}
