//! List items that carry a few common fields and exactly one body out of a closed set.
//!
//! Users write a task as `{name: motd, file: {...}}` and a sink as `{name: s3, s3: {...}}`: one
//! key names the type. In Rust that closed set is an enum (`TaskAction::File(FileTask)`) so every
//! `match` over it is exhaustive. Serde's own `flatten` would accept the YAML shape but silently
//! ignores unknown and duplicate keys, so [`one_of!`] generates the pieces instead:
//!
//! - the item struct with its common fields and the enum,
//! - a *wire* struct (`...Fields`) with one optional field per variant, which is what is
//!   deserialized (so errors keep their field path and unknown keys are refused) and what the
//!   CRD schema is generated from (so `kubectl explain` documents every variant),
//! - the conversion that insists on exactly one variant, and the matching CEL rule so the API
//!   server refuses the same objects.

/// Declares an item type with common fields and exactly one variant body. See the module docs.
#[macro_export]
macro_rules! one_of {
    (
        $(#[$smeta:meta])*
        pub struct $name:ident ($wire:ident) {
            $(
                $(#[$fmeta:meta])*
                pub $field:ident : $fty:ty,
            )*
        }
        $(#[$ameta:meta])*
        pub $afield:ident : $enum:ident ($what:literal) {
            $(
                $(#[$vmeta:meta])*
                $key:literal $vfield:ident => $variant:ident($vty:ty),
            )+
        }
    ) => {
        $(#[$smeta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $(
                #[doc = concat!("The `", stringify!($field), "` field; see [`", stringify!($wire), "`].")]
                pub $field: $fty,
            )*
            $(#[$ameta])*
            pub $afield: $enum,
        }

        $(#[$ameta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub enum $enum {
            $( $(#[$vmeta])* $variant($vty), )+
        }

        impl $enum {
            /// The keys users write, one per variant, in declaration order.
            pub const KEYS: &'static [&'static str] = &[$($key),+];

            /// The key that names this variant in YAML.
            pub fn key(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $key, )+
                }
            }
        }

        $(#[$smeta])*
        ///
        /// This is the form read from and written to YAML; exactly one of the optional
        /// variant fields must be set.
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $wire {
            $( $(#[$fmeta])* pub $field: $fty, )*
            $(
                $(#[$vmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $vfield: Option<$vty>,
            )+
        }

        impl TryFrom<$wire> for $name {
            type Error = String;

            fn try_from(wire: $wire) -> Result<Self, String> {
                let mut found: Vec<&str> = Vec::new();
                let mut body = None;
                $(
                    if let Some(value) = wire.$vfield {
                        found.push($key);
                        body = Some($enum::$variant(value));
                    }
                )+
                match (found.len(), body) {
                    (1, Some(body)) => Ok(Self { $( $field: wire.$field, )* $afield: body }),
                    (0, _) => Err(format!(
                        "exactly one {} must be set, one of: {}",
                        $what,
                        $enum::KEYS.join(", ")
                    )),
                    _ => Err(format!(
                        "exactly one {} must be set, found {}",
                        $what,
                        found.join(" and ")
                    )),
                }
            }
        }

        impl From<$name> for $wire {
            fn from(item: $name) -> Self {
                let mut wire = $wire {
                    $( $field: item.$field, )*
                    $( $vfield: None, )+
                };
                match item.$afield {
                    $( $enum::$variant(value) => wire.$vfield = Some(value), )+
                }
                wire
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $wire::from(self.clone()).serialize(serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let wire = $wire::deserialize(deserializer)?;
                Self::try_from(wire).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut schema = $wire::json_schema(gen);
                let rule = $crate::one_of::exactly_one_rule($enum::KEYS);
                let message = format!("exactly one {} must be set, one of: {}", $what, $enum::KEYS.join(", "));
                $crate::common::add_rules(&mut schema, &[(rule.as_str(), message.as_str())]);
                schema
            }
        }
    };
}

/// The CEL rule that exactly one of the given optional fields is set.
pub fn exactly_one_rule(keys: &[&str]) -> String {
    let present: Vec<String> = keys
        .iter()
        .map(|k| format!("has(self.{})", crate::validate::cel_field(k)))
        .collect();
    format!("[{}].exists_one(x, x)", present.join(", "))
}
