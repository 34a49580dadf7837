//! The Driftless operator: start-up checks, leader election and HTTP endpoints. Controllers
//! (policy status, DriftScan), the DriftScan scheduler and the scan runner build on these.

pub mod api;
pub mod dashboard;
pub mod error;
pub mod http;
pub mod leader;
pub mod notify;
pub mod policy;
pub mod preflight;
pub mod repo;
pub mod runner;
pub mod scan;
pub mod tls;

pub use error::Error;
