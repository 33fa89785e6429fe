//! Reading the file and the environment: the TOML text parsed into [`RawConfig`] (type errors
//! located by line and key), unknown keys collected rather than refused one at a time, and the
//! `GATEWAY_SECTION__KEY` overrides applied on top, each typed like the value it replaces.

use std::collections::BTreeMap;

use super::raw::{RawConfig, env_var};
use super::{ENV_PREFIX, Problem};

/// Parses the TOML `text`, then applies the environment overrides.
pub(super) fn parse_with_overrides(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RawConfig, Vec<Problem>> {
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| vec![file_problem(text, &e)])?;
    let mut unknown = Vec::new();
    let raw: RawConfig =
        serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string()))
            .map_err(|e| vec![file_problem(text, &e)])?;
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| unknown_key(key, None))
        .collect();
    let overrides: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    if overrides.is_empty() {
        return if problems.is_empty() {
            Ok(raw)
        } else {
            Err(problems)
        };
    }
    let mut tree = toml::Table::try_from(&raw).map_err(|e| {
        vec![Problem {
            key: "(config)".into(),
            message: format!("cannot re-encode the configuration: {e}"),
        }]
    })?;
    for (var, value) in &overrides {
        if let Err(message) = apply_override(&mut tree, var, value) {
            problems.push(Problem {
                key: var.clone(),
                message,
            });
        }
    }
    let mut unknown = Vec::new();
    let merged = serde_ignored::deserialize(toml::Value::Table(tree), |path| {
        unknown.push(path.to_string())
    });
    for key in unknown {
        let var = env_var(&key);
        problems.push(unknown_key(key, Some(var)));
    }
    match merged {
        Ok(raw) if problems.is_empty() => Ok(raw),
        Ok(_) => Err(problems),
        Err(e) => {
            problems.push(Problem {
                key: "(environment)".into(),
                message: format!("{e}; check the GATEWAY_SECTION__KEY variables"),
            });
            Err(problems)
        }
    }
}

fn unknown_key(key: String, var: Option<String>) -> Problem {
    let message = match &var {
        Some(var) => {
            format!("unknown key `{key}` (from environment {var}); remove it or fix its spelling")
        }
        None => format!(
            "unknown key `{key}`; remove it or fix its spelling (see config/gateway.example.toml)"
        ),
    };
    Problem {
        key: var.unwrap_or(key),
        message,
    }
}

/// A file problem located by its line: the key (`section.key`) when the span points at one.
fn file_problem(text: &str, e: &toml::de::Error) -> Problem {
    let message = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return Problem {
            key: "(file)".into(),
            message,
        };
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default().trim();
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match (line.split_once('='), section) {
        (Some((k, _)), Some(section)) => format!("{section}.{}", k.trim()),
        (Some((k, _)), None) => k.trim().to_string(),
        (None, _) => format!("(file line {line_no})"),
    };
    Problem {
        key,
        message: format!("{message} (line {line_no}: `{line}`)"),
    }
}

/// Sets `section.key` from `GATEWAY_SECTION__KEY`, typed like the value it replaces.
fn apply_override(tree: &mut toml::Table, var: &str, value: &str) -> Result<(), String> {
    let path = var[ENV_PREFIX.len()..].to_ascii_lowercase();
    let Some((section, key)) = path.split_once("__") else {
        return Err("expected GATEWAY_SECTION__KEY".into());
    };
    let Some(toml::Value::Table(table)) = tree.get_mut(section) else {
        return Err(format!(
            "no config section `[{section}]` can be set from the environment"
        ));
    };
    let typed = match table.get(key) {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_string()),
        Some(toml::Value::Integer(_)) => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{section}.{key}` takes an integer, got `{value}`"))?,
        Some(toml::Value::Boolean(_)) => match value.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => {
                return Err(format!(
                    "`{section}.{key}` takes true or false, got `{value}`"
                ));
            }
        },
        Some(toml::Value::Array(_)) => parse_toml_literal(value).unwrap_or_else(|| {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            )
        }),
        Some(_) => {
            return Err(format!(
                "`{section}.{key}` cannot be set from the environment"
            ));
        }
        // Optional keys are absent from the re-encoded tree; the struct decides their type.
        None => toml::Value::String(value.to_string()),
    };
    table.insert(key.to_string(), typed);
    Ok(())
}

fn parse_toml_literal(value: &str) -> Option<toml::Value> {
    let table: toml::Table = toml::from_str(&format!("v = {value}")).ok()?;
    table.get("v").cloned()
}
