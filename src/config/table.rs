//! One `[[route]]` table as written: its path, its `type`, where each key is, and reading a
//! kind's settings struct from that table's keys alone. A kind's struct is deserialized by
//! toml itself from a copy of the config text in which everything but those keys is blanked
//! out (offsets kept), so toml's own errors point at the line of the key at fault, and a key
//! of another struct can never be read by mistake.

use serde::de::{DeserializeOwned, Visitor};
use serde::Deserializer;

use super::{key_on_line, line_of, ConfigError};

/// One `[[route]]` table of a config text.
pub struct RouteTable<'a> {
    text: &'a str,
    file: &'a str,
    table: &'a dyn toml_edit::TableLike,
    /// The route's path (`/events`), with where it is written.
    pub path: toml::Spanned<String>,
    /// Its `type`, with where it is written.
    pub kind: toml::Spanned<String>,
}

/// A string value of `table` at `key` with its span; `Err` names what is wrong with it.
fn string_at(
    table: &dyn toml_edit::TableLike,
    key: &str,
) -> Result<toml::Spanned<String>, (Option<std::ops::Range<usize>>, String)> {
    let Some((k, item)) = table.get_key_value(key) else {
        return Err((None, format!("missing field `{key}`")));
    };
    match item.as_str() {
        Some(s) => Ok(toml::Spanned::new(
            item.span().unwrap_or_default(),
            s.to_string(),
        )),
        None => Err((k.span(), format!("`{key}` must be a string"))),
    }
}

impl<'a> RouteTable<'a> {
    /// The table `table` of `text` (named `file` in errors): its `path` and `type` must be
    /// strings.
    pub fn new(
        text: &'a str,
        file: &'a str,
        table: &'a dyn toml_edit::TableLike,
        header: Option<std::ops::Range<usize>>,
    ) -> Result<RouteTable<'a>, ConfigError> {
        let error = |(span, message): (Option<std::ops::Range<usize>>, String)| ConfigError {
            file: file.to_string(),
            line: span.or(header.clone()).map(|s| line_of(text, s.start)),
            key: None,
            message: format!("[[route]]: {message}"),
        };
        Ok(RouteTable {
            path: string_at(table, "path").map_err(error)?,
            kind: string_at(table, "type").map_err(error)?,
            text,
            file,
            table,
        })
    }

    /// The keys written in the table, with their lines.
    pub fn keys(&self) -> Vec<(String, Option<usize>)> {
        self.table
            .iter()
            .map(|(k, _)| (k.to_string(), self.line(k)))
            .collect()
    }

    /// The line `key` is written on, if it is.
    pub fn line(&self, key: &str) -> Option<usize> {
        let (k, _) = self.table.get_key_value(key)?;
        Some(line_of(self.text, k.span()?.start))
    }

    /// A refusal of `key`: on its line when it is written, else on the route's path.
    pub fn refuse(&self, key: &str, message: String) -> ConfigError {
        let line = self
            .line(key)
            .or_else(|| Some(line_of(self.text, self.path.span().start)));
        ConfigError {
            file: self.file.to_string(),
            line,
            key: Some(key.to_string()),
            message,
        }
    }

    /// `T` read from this table's keys that are `T`'s fields (the others are left to other
    /// structs of the same kind); a key missing takes `T`'s default.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.read_from(self.table, field_names::<T>())
    }

    /// The tables of list `key` (`[[route.issuer]]`, or `issuer = [{…}, …]`), each read as a
    /// `T`; a key of one that is not `T`'s is refused on its line. No key: an empty list.
    pub fn read_list<T: DeserializeOwned>(&self, key: &str) -> Result<Vec<T>, ConfigError> {
        use toml_edit::{Item, Value};
        let Some(item) = self.table.get(key) else {
            return Ok(Vec::new());
        };
        let not_tables = || {
            let why = format!(
                "route {}: {key} is a list of tables ([[route.{key}]])",
                self.path.get_ref()
            );
            self.refuse(key, why)
        };
        let tables: Vec<&dyn toml_edit::TableLike> = match item {
            Item::ArrayOfTables(a) => a.iter().map(|t| t as &dyn toml_edit::TableLike).collect(),
            Item::Value(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike))
                .collect::<Option<_>>()
                .ok_or_else(not_tables)?,
            _ => return Err(not_tables()),
        };
        let fields = field_names::<T>();
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            if let Some((k, _)) = t.iter().find(|(k, _)| !fields.contains(k)) {
                let line = t
                    .get_key_value(k)
                    .and_then(|(k, _)| k.span())
                    .map(|s| line_of(self.text, s.start));
                return Err(ConfigError {
                    file: self.file.to_string(),
                    line,
                    key: Some(format!("{key}.{k}")),
                    message: format!(
                        "route {}: the {key} table does not take `{k}` (it takes: {})",
                        self.path.get_ref(),
                        fields.join(", ")
                    ),
                });
            }
            out.push(self.read_from(t, fields)?);
        }
        Ok(out)
    }

    fn read_from<T: DeserializeOwned>(
        &self,
        table: &dyn toml_edit::TableLike,
        fields: &[&str],
    ) -> Result<T, ConfigError> {
        let (text, spans) = masked(self.text, table, fields);
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            let key = at
                .and_then(|at| spans.iter().find(|(_, s)| s.contains(&at)))
                .map(|(k, _)| k.clone())
                .or_else(|| at.and_then(|at| key_on_line(self.text, line_of(self.text, at))));
            ConfigError {
                file: self.file.to_string(),
                line: at
                    .or(Some(self.path.span().start))
                    .map(|at| line_of(self.text, at)),
                key,
                message: format!("route {}: {}", self.path.get_ref(), e.message()),
            }
        })
    }

    /// A refusal on the line `span` starts on (a value read with its span).
    pub fn refuse_at(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: String,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: Some(line_of(self.text, span.start)),
            key: Some(key.to_string()),
            message,
        }
    }
}

/// `text` with only the `key = value` pairs of `keys` in `table` left, each on a line of its
/// own, at their offsets; and the span of each pair left.
fn masked(
    text: &str,
    table: &dyn toml_edit::TableLike,
    keys: &[&str],
) -> (String, Vec<(String, std::ops::Range<usize>)>) {
    let mut out: Vec<u8> = text
        .bytes()
        .map(|b| if b == b'\n' { b'\n' } else { b' ' })
        .collect();
    let mut spans = Vec::new();
    for (name, _) in table.iter() {
        if !keys.contains(&name) {
            continue;
        }
        let Some((k, item)) = table.get_key_value(name) else {
            continue;
        };
        let (Some(ks), Some(vs)) = (k.span(), item.span()) else {
            continue;
        };
        let pair = ks.start..vs.end;
        out[pair.clone()].copy_from_slice(&text.as_bytes()[pair.clone()]);
        // Pairs of an inline table share a line: each gets its own.
        if pair.start > 0 && out[pair.start - 1] == b' ' {
            out[pair.start - 1] = b'\n';
        }
        spans.push((name.to_string(), pair));
    }
    // Only whole pairs were copied, so the text is valid UTF-8 at the same offsets.
    (String::from_utf8(out).unwrap_or_default(), spans)
}

/// The field names of `T` as its `Deserialize` asks for them (a struct; `[]` otherwise).
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(&'static [&'static str]);
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut f = Fields(&[]);
    let _ = T::deserialize(&mut f);
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(default)]
    struct Tick {
        interval: u64,
        name: String,
    }

    impl Default for Tick {
        fn default() -> Self {
            Tick {
                interval: 1,
                name: "x".into(),
            }
        }
    }

    fn with_table<R>(text: &str, f: impl FnOnce(RouteTable) -> R) -> R {
        let doc = toml_edit::ImDocument::parse(text).unwrap();
        let t = doc["route"].as_array_of_tables().unwrap().get(0).unwrap();
        f(RouteTable::new(text, "f.toml", t, t.span()).unwrap())
    }

    #[test]
    fn field_names_are_the_structs() {
        assert_eq!(field_names::<Tick>(), ["interval", "name"]);
        assert!(field_names::<u64>().is_empty());
    }

    #[test]
    fn a_struct_reads_its_own_keys_and_errors_name_the_line_and_key() {
        let text = "# c\n[[route]]\npath = \"/a\"\ntype = \"t\"\nother = [1,\n 2]\ninterval = 5\n";
        let t: Tick = with_table(text, |t| t.read().unwrap());
        assert_eq!((t.interval, t.name.as_str()), (5, "x"));
        let text = "[[route]]\npath = \"/a\"\ntype = \"t\"\n\ninterval = \"soon\"\n";
        let e = with_table(text, |t| t.read::<Tick>().unwrap_err());
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("interval")));
        assert!(e.message.starts_with("route /a: "), "{}", e.message);
    }

    #[test]
    fn inline_tables_read_too() {
        let text = "route = [{ path = \"/a\", type = \"t\", interval = 7, name = \"n\" }]\n";
        let doc = toml_edit::ImDocument::parse(text).unwrap();
        let arr = doc["route"].as_array().unwrap();
        let t = arr.get(0).unwrap().as_inline_table().unwrap();
        let table = RouteTable::new(text, "f.toml", t, None).unwrap();
        let tick: Tick = table.read().unwrap();
        assert_eq!((tick.interval, tick.name.as_str()), (7, "n"));
        assert_eq!(table.path.get_ref(), "/a");
    }

    #[test]
    fn path_and_type_must_be_strings() {
        let text = "[[route]]\npath = 5\ntype = \"t\"\n";
        let doc = toml_edit::ImDocument::parse(text).unwrap();
        let t = doc["route"].as_array_of_tables().unwrap().get(0).unwrap();
        let e = RouteTable::new(text, "f.toml", t, t.span()).err().unwrap();
        assert_eq!(e.line, Some(2));
        assert!(
            e.message.contains("`path` must be a string"),
            "{}",
            e.message
        );
    }
}
