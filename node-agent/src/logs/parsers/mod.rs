//! Parsers: one per `format`, each turning a line into event fields. A line that fails to parse
//! is kept: its text goes to `message` and the reason to `error`.

pub mod cri;
pub mod json;
pub mod logfmt;
pub mod plain;
pub mod regex;
pub mod syslog;

use driftless_crds::log_pipeline::{LogFormat, LogSource};
use serde_json::Value;

use super::{Fields, LogError};

/// A compiled parser.
#[derive(Clone, Debug)]
pub enum Parser {
    /// The line is the message.
    Plain,
    /// CRI lines: the reassembled content is the message; `stream` and `time` fields.
    Cri,
    /// One JSON object per line.
    Json,
    /// `key=value` pairs.
    Logfmt,
    /// Named captures.
    Regex(::regex::Regex),
    /// RFC 3164 / RFC 5424.
    Syslog,
}

impl Parser {
    /// The parser of a source.
    pub fn for_source(source: &LogSource) -> Result<Self, LogError> {
        if source.kubernetes {
            return Ok(Parser::Cri);
        }
        Ok(match source.format {
            LogFormat::Plain => Parser::Plain,
            LogFormat::Cri => Parser::Cri,
            LogFormat::Json => Parser::Json,
            LogFormat::Logfmt => Parser::Logfmt,
            LogFormat::Syslog => Parser::Syslog,
            LogFormat::Regex => {
                let pattern = source
                    .regex
                    .as_ref()
                    .map(|r| r.pattern.as_str())
                    .ok_or_else(|| {
                        LogError::Config(format!(
                            "source {}: regex.pattern is required",
                            source.name
                        ))
                    })?;
                Parser::Regex(::regex::Regex::new(pattern).map_err(|e| {
                    LogError::Config(format!("source {}: regex.pattern: {e}", source.name))
                })?)
            }
        })
    }

    /// Parses the text of one record (CRI metadata is already split off) into `fields`.
    pub fn parse(&self, text: &str, fields: &mut Fields) {
        let result = match self {
            Parser::Plain | Parser::Cri => {
                plain::parse(text, fields);
                Ok(())
            }
            Parser::Json => json::parse(text, fields),
            Parser::Logfmt => logfmt::parse(text, fields),
            Parser::Regex(re) => regex::parse(re, text, fields),
            Parser::Syslog => syslog::parse(text, fields),
        };
        if let Err(error) = result {
            fields.insert("message".into(), Value::String(text.to_owned()));
            fields.insert("error".into(), Value::String(error));
        }
    }
}
