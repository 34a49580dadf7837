//! `softnet`: per-CPU packet processing statistics from `/proc/net/softnet_stat` (hexadecimal,
//! one line per online CPU), as node_exporter 1.5 exports them: the `cpu` label is the line's
//! index. A line with fewer than nine columns or a value that is not a 32-bit hexadecimal
//! number fails the collector; a missing file is "no data".

use std::path::PathBuf;

use super::{read, CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Softnet {
    path: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Softnet {
        path: settings.paths.proc.join("net/softnet_stat"),
    }))
}

/// `(processed, dropped, times squeezed)` per line.
pub fn parse(text: &str) -> Result<Vec<[u32; 3]>, CollectError> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.len() < 9 {
            return Err(CollectError::Failed(format!(
                "softnet: {} columns were detected, but at least 9 were expected",
                columns.len()
            )));
        }
        let mut row = [0u32; 3];
        for (v, column) in row.iter_mut().zip(&columns) {
            *v = u32::from_str_radix(column, 16).map_err(|e| {
                CollectError::Failed(format!("softnet: invalid value {column:?}: {e}"))
            })?;
        }
        rows.push(row);
    }
    Ok(rows)
}

impl Collector for Softnet {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let rows = parse(&read(&self.path)?)?;
        let mut families = [
            Family::new(
                "node_softnet_processed_total",
                "Number of processed packets",
                Kind::Counter,
            ),
            Family::new(
                "node_softnet_dropped_total",
                "Number of dropped packets",
                Kind::Counter,
            ),
            Family::new(
                "node_softnet_times_squeezed_total",
                "Number of times processing packets ran out of quota",
                Kind::Counter,
            ),
        ];
        for (cpu, row) in rows.iter().enumerate() {
            for (family, v) in families.iter_mut().zip(row) {
                family.push(vec![("cpu", cpu.to_string())], f64::from(*v));
            }
        }
        out.extend(families);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_first_three_columns_of_each_cpu() {
        let text = "00082a5a 00000001 00000002 0 0 0 0 0 0 0 0 0 00000000 00000000 00000000\n\
                    ffffffff 00000000 00000001 0 0 0 0 0 0\n";
        assert_eq!(
            parse(text).expect("parse"),
            [[535130, 1, 2], [u32::MAX, 0, 1]]
        );
        assert!(parse("1 2 3\n").is_err());
        assert!(parse("1ffffffff 0 0 0 0 0 0 0 0\n").is_err());
    }
}
