//! CSI volume specification files (`berth volume create|register FILE`):
//! HCL (including the HCL1 forms Nomad's `volume.csi.hcl` uses) or Nomad's
//! API JSON of one volume, to a validated [`CsiVolume`].
//!
//! ```
//! let src = r#"
//! id        = "db"
//! type      = "csi"
//! plugin_id = "nfs"
//! capacity_min = "10GiB"
//! capability {
//!   access_mode     = "single-node-writer"
//!   attachment_mode = "file-system"
//! }
//! "#;
//! let volume = berth::jobspec::parse_volume("db.volume.hcl", src).unwrap();
//! assert_eq!((volume.name.as_str(), volume.namespace.as_str()), ("db", "default"));
//! assert_eq!(volume.requested_capacity_min, 10 << 30);
//! ```

use hcl_edit::structure::Body;
use hcl_edit::Span;
use serde_json::Value;

use crate::hclspan::{Block, Decoder, HclError, Pos, Scope, Source};
use crate::structs::{
    access_mode, attachment_mode, CsiMountOptions, CsiTopology, CsiTopologyRequest, CsiVolume, CsiVolumeCapability,
};

/// Parses a CSI volume specification file (`berth volume create|register FILE`):
/// HCL (the HCL1 forms Nomad's volume files use, which hclspan accepts) or,
/// when the first non-blank character is `{`, Nomad's API JSON of one volume
/// (`{"ID": .., "PluginID": .., "RequestedCapabilities": [..], ..}`).
///
/// Every error is pinned to `file:line:col` and names the field involved.
/// `schedulable` is always false: the server decides.
pub fn parse_volume(file_name: &str, src: &str) -> Result<CsiVolume, HclError> {
    let mut volume =
        if src.trim_start().starts_with('{') { parse_json(file_name, src)? } else { parse_hcl(file_name, src)? };
    if volume.name.is_empty() {
        volume.name = volume.id.clone();
    }
    if volume.namespace.is_empty() {
        volume.namespace = "default".to_string();
    }
    volume.schedulable = false;
    Ok(volume)
}

/// A field validation can complain about.
#[derive(Debug, Clone, Copy)]
enum Field {
    Id,
    PluginId,
    SnapshotId,
    CloneId,
    CapacityMin,
    CapacityMax,
    Capabilities,
    AccessMode(usize),
    AttachmentMode(usize),
}

/// Names fields and finds them in the file, in the file's own syntax.
trait Locate {
    fn file(&self) -> &str;
    fn name(&self, field: Field) -> String;
    fn pos(&self, field: Field) -> Pos;

    fn error(&self, field: Field, message: impl std::fmt::Display) -> HclError {
        HclError::new(self.file(), self.pos(field), format!("{}: {message}", self.name(field)))
    }
}

/// The checks both forms share.
fn validate(v: &CsiVolume, at: &impl Locate) -> Result<(), HclError> {
    for (field, value) in [(Field::Id, &v.id), (Field::PluginId, &v.plugin_id)] {
        if value.trim().is_empty() {
            return Err(at.error(field, "missing required field"));
        }
    }
    if !v.snapshot_id.is_empty() && !v.clone_id.is_empty() {
        let (snapshot, clone) = (at.name(Field::SnapshotId), at.name(Field::CloneId));
        let message =
            format!("{snapshot} and {clone} are mutually exclusive: a volume is created from one or the other");
        return Err(HclError::new(at.file(), at.pos(Field::CloneId), message));
    }
    for (field, value) in
        [(Field::CapacityMin, v.requested_capacity_min), (Field::CapacityMax, v.requested_capacity_max)]
    {
        if value < 0 {
            return Err(at.error(field, format!("must not be negative, got {value}")));
        }
    }
    let (min, max) = (v.requested_capacity_min, v.requested_capacity_max);
    if min > 0 && max > 0 && min > max {
        let message = format!(
            "{min} bytes ({}) is greater than {} {max} bytes ({})",
            crate::util::format_bytes(min as u64),
            at.name(Field::CapacityMax),
            crate::util::format_bytes(max as u64),
        );
        return Err(at.error(Field::CapacityMin, message));
    }
    if v.requested_capabilities.is_empty() {
        return Err(at.error(Field::Capabilities, "at least one capability is required"));
    }
    for (i, cap) in v.requested_capabilities.iter().enumerate() {
        check_mode(at, Field::AccessMode(i), "access mode", &cap.access_mode, &access_mode::ALL)?;
        check_mode(at, Field::AttachmentMode(i), "attachment mode", &cap.attachment_mode, &attachment_mode::ALL)?;
    }
    Ok(())
}

fn check_mode(at: &impl Locate, field: Field, what: &str, value: &str, valid: &[&str]) -> Result<(), HclError> {
    if valid.contains(&value) {
        return Ok(());
    }
    let problem = if value.is_empty() { "missing".to_string() } else { format!("unknown {what} {value:?}") };
    Err(at.error(field, format!("{problem}; valid {what}s are: {}", valid.join(", "))))
}

// ---------------------------------------------------------------- HCL

/// Field names and positions in an HCL file.
struct HclPlaces<'a> {
    src: &'a Source,
}

impl HclPlaces<'_> {
    fn attr_pos(&self, body: &Body, key: &str, fallback: Pos) -> Pos {
        body.get_attribute(key).map_or(fallback, |a| self.src.span_pos(a.value.span()))
    }

    fn capability_pos(&self, i: usize, key: &str) -> Pos {
        match self.src.body().get_blocks("capability").nth(i) {
            Some(block) => self.attr_pos(&block.body, key, self.src.span_pos(block.span())),
            None => Pos::default(),
        }
    }
}

impl Locate for HclPlaces<'_> {
    fn file(&self) -> &str {
        self.src.name()
    }

    fn name(&self, field: Field) -> String {
        match field {
            Field::Id => "id".into(),
            Field::PluginId => "plugin_id".into(),
            Field::SnapshotId => "snapshot_id".into(),
            Field::CloneId => "clone_id".into(),
            Field::CapacityMin => "capacity_min".into(),
            Field::CapacityMax => "capacity_max".into(),
            Field::Capabilities => "capability".into(),
            Field::AccessMode(_) => "capability.access_mode".into(),
            Field::AttachmentMode(_) => "capability.attachment_mode".into(),
        }
    }

    fn pos(&self, field: Field) -> Pos {
        let root = self.src.body();
        match field {
            Field::AccessMode(i) => self.capability_pos(i, "access_mode"),
            Field::AttachmentMode(i) => self.capability_pos(i, "attachment_mode"),
            Field::Capabilities => Pos::default(),
            other => self.attr_pos(root, &self.name(other), Pos::default()),
        }
    }
}

fn parse_hcl(file_name: &str, text: &str) -> Result<CsiVolume, HclError> {
    let src = Source::parse(file_name, &segments_as_objects(text))?;
    let scope = Scope::new();
    let places = HclPlaces { src: &src };
    let mut b = Decoder::root(&src, &scope);

    let volume_type = b.string("type")?;
    let (capacity_min, capacity_max) = (b.string("capacity_min")?, b.string("capacity_max")?);
    let mut volume = CsiVolume {
        id: b.string("id")?.unwrap_or_default(),
        name: b.string("name")?.unwrap_or_default(),
        namespace: b.string("namespace")?.unwrap_or_default(),
        plugin_id: b.string("plugin_id")?.unwrap_or_default(),
        external_id: b.string("external_id")?.unwrap_or_default(),
        snapshot_id: b.string("snapshot_id")?.unwrap_or_default(),
        clone_id: b.string("clone_id")?.unwrap_or_default(),
        secrets: b.string_map("secrets")?.unwrap_or_default(),
        parameters: b.string_map("parameters")?.unwrap_or_default(),
        context: b.string_map("context")?.unwrap_or_default(),
        ..CsiVolume::default()
    };
    for block in b.blocks("capability") {
        volume.requested_capabilities.push(decode_capability(block)?);
    }
    if let Some(mut opts) = b.block("mount_options")? {
        opts.no_labels()?;
        volume.mount_options = Some(CsiMountOptions {
            fs_type: opts.body.string("fs_type")?.unwrap_or_default(),
            mount_flags: opts.body.strings("mount_flags")?.unwrap_or_default(),
        });
        opts.body.finish()?;
    }
    if let Some(mut request) = b.block("topology_request")? {
        request.no_labels()?;
        let mut topologies = CsiTopologyRequest::default();
        if let Some(required) = request.body.block("required")? {
            topologies.required = decode_topologies(required)?;
        }
        if let Some(preferred) = request.body.block("preferred")? {
            topologies.preferred = decode_topologies(preferred)?;
        }
        request.body.finish()?;
        volume.requested_topologies = Some(topologies);
    }
    b.finish()?;

    match volume_type.as_deref() {
        Some("csi") => {}
        None => return Err(src.error_at(0, "type: missing required field; volume specifications need type = \"csi\"")),
        Some("host") => {
            let pos = places.attr_pos(src.body(), "type", Pos::default());
            let message = "type: dynamic host volumes (type = \"host\") are not supported by berth; \
                           use a client host_volume or a CSI volume (type = \"csi\")";
            return Err(HclError::new(file_name, pos, message));
        }
        Some(other) => {
            let pos = places.attr_pos(src.body(), "type", Pos::default());
            return Err(HclError::new(
                file_name,
                pos,
                format!("type: unsupported volume type {other:?}; expected \"csi\""),
            ));
        }
    }
    volume.requested_capacity_min = capacity(&places, Field::CapacityMin, capacity_min)?;
    volume.requested_capacity_max = capacity(&places, Field::CapacityMax, capacity_max)?;
    validate(&volume, &places)?;
    Ok(volume)
}

/// Nomad's `volume init` template writes topologies the HCL1 way, as
/// one-line nested blocks with comma-separated items
/// (`topology { segments { rack = "R2", zone = "us-east-1a" } }`), which HCL2
/// rejects. Turning each `segments {` block into an object attribute
/// (`segments={`: the blank before the brace becomes `=`) makes those valid
/// without moving any line or column; `string_map` reads either form.
/// Strings and comments are left alone.
fn segments_as_objects(text: &str) -> String {
    const KEY: &[u8] = b"segments";
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    // True while only blanks follow the last newline or `{`: an item may start here.
    let mut item_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                item_start = false;
            }
            b'#' => i += rest.iter().take_while(|&&b| b != b'\n').count() - 1,
            b'/' if rest.starts_with(b"//") => i += rest.iter().take_while(|&&b| b != b'\n').count() - 1,
            b'/' if rest.starts_with(b"/*") => {
                i += rest.windows(2).position(|w| w == b"*/").map_or(rest.len(), |p| p + 1);
            }
            b'\n' | b'{' => item_start = true,
            b' ' | b'\t' | b'\r' => {}
            _ => {
                if item_start && rest.starts_with(KEY) {
                    let gap = rest[KEY.len()..].iter().take_while(|&&b| b == b' ' || b == b'\t').count();
                    if gap > 0 && rest.get(KEY.len() + gap) == Some(&b'{') {
                        out[i + KEY.len()] = b'=';
                    }
                }
                item_start = false;
            }
        }
        i += 1;
    }
    // Only ASCII bytes were replaced, by ASCII.
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

/// A humanized byte size ("10GiB", "20G", "512MiB", "1024"), as go-humanize's
/// `ParseBytes` reads it; absent is 0 (no requirement).
fn capacity(places: &HclPlaces<'_>, field: Field, value: Option<String>) -> Result<i64, HclError> {
    let Some(value) = value else { return Ok(0) };
    let bytes = crate::util::parse_bytes(&value).map_err(|err| places.error(field, err))?;
    i64::try_from(bytes).map_err(|_| places.error(field, format!("{value:?} is too large")))
}

fn decode_capability(mut block: Block<'_>) -> Result<CsiVolumeCapability, HclError> {
    block.no_labels()?;
    let capability = CsiVolumeCapability {
        access_mode: block.body.string("access_mode")?.unwrap_or_default(),
        attachment_mode: block.body.string("attachment_mode")?.unwrap_or_default(),
    };
    block.body.finish()?;
    Ok(capability)
}

/// `required { topology { segments { k = "v" } } ... }` (or `preferred`).
fn decode_topologies(mut block: Block<'_>) -> Result<Vec<CsiTopology>, HclError> {
    block.no_labels()?;
    let mut out = Vec::new();
    for mut topology in block.body.blocks("topology") {
        topology.no_labels()?;
        out.push(CsiTopology { segments: topology.body.string_map("segments")?.unwrap_or_default() });
        topology.body.finish()?;
    }
    block.body.finish()?;
    Ok(out)
}

// ---------------------------------------------------------------- JSON

/// Field names (the API's PascalCase) and best-effort positions in a JSON file.
struct JsonPlaces<'a> {
    file: &'a str,
    text: &'a str,
}

impl JsonPlaces<'_> {
    /// The 1-based position of a byte offset.
    fn pos_of(&self, offset: usize) -> Pos {
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Pos { line, column }
    }

    /// The offset of the `n`th (0-based) `"key"` at or after `from`.
    fn key_offset(&self, key: &str, from: usize, n: usize) -> Option<usize> {
        let quoted = format!("\"{key}\"");
        self.text[from..].match_indices(&quoted).nth(n).map(|(i, _)| from + i)
    }

    fn capability_pos(&self, i: usize, key: &str) -> Pos {
        let list = self.key_offset("RequestedCapabilities", 0, 0);
        let at = list.and_then(|start| self.key_offset(key, start, i)).or(list);
        at.map_or_else(Pos::default, |o| self.pos_of(o))
    }
}

impl Locate for JsonPlaces<'_> {
    fn file(&self) -> &str {
        self.file
    }

    fn name(&self, field: Field) -> String {
        match field {
            Field::Id => "ID".into(),
            Field::PluginId => "PluginID".into(),
            Field::SnapshotId => "SnapshotID".into(),
            Field::CloneId => "CloneID".into(),
            Field::CapacityMin => "RequestedCapacityMin".into(),
            Field::CapacityMax => "RequestedCapacityMax".into(),
            Field::Capabilities => "RequestedCapabilities".into(),
            Field::AccessMode(i) => format!("RequestedCapabilities[{i}].AccessMode"),
            Field::AttachmentMode(i) => format!("RequestedCapabilities[{i}].AttachmentMode"),
        }
    }

    fn pos(&self, field: Field) -> Pos {
        match field {
            Field::AccessMode(i) => self.capability_pos(i, "AccessMode"),
            Field::AttachmentMode(i) => self.capability_pos(i, "AttachmentMode"),
            other => self.key_offset(&self.name(other), 0, 0).map_or_else(Pos::default, |o| self.pos_of(o)),
        }
    }
}

fn parse_json(file_name: &str, text: &str) -> Result<CsiVolume, HclError> {
    let places = JsonPlaces { file: file_name, text };
    let mut value: Value = serde_json::from_str(text).map_err(|err| json_error(file_name, &err))?;
    let Value::Object(object) = &mut value else {
        return Err(HclError::new(file_name, Pos::default(), "expected a JSON object describing one volume"));
    };
    // Go writes nil maps and slices as null; read those as absent.
    object.values_mut().for_each(drop_nulls);
    object.retain(|_, v| !v.is_null());
    let volume: CsiVolume = match serde_json::from_value(Value::Object(object.clone())) {
        Ok(volume) => volume,
        Err(err) => {
            // Find the offending key by decoding the fields one at a time.
            let bad = object.iter().find(|(k, v)| {
                let single = serde_json::Map::from_iter([((*k).clone(), (*v).clone())]);
                serde_json::from_value::<CsiVolume>(Value::Object(single)).is_err()
            });
            let (key, pos) = match bad {
                Some((k, _)) => {
                    (k.as_str(), places.key_offset(k, 0, 0).map_or_else(Pos::default, |o| places.pos_of(o)))
                }
                None => ("volume", Pos::default()),
            };
            return Err(HclError::new(file_name, pos, format!("{key}: {err}")));
        }
    };
    validate(&volume, &places)?;
    Ok(volume)
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// A serde_json syntax error at its own line and column.
fn json_error(file_name: &str, err: &serde_json::Error) -> HclError {
    let text = err.to_string();
    let message = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
    let pos = Pos { line: err.line().max(1), column: err.column().max(1) };
    HclError::new(file_name, pos, format!("invalid volume JSON: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nomad's `volume init` template (`command/asset/volume.csi.hcl`), verbatim
    /// but for its access mode `single-node-reader`, which Nomad itself rejects.
    const FULL: &str = r#"id        = "ebs_prod_db1"
namespace = "default"
name      = "database"
type      = "csi"
plugin_id = "plugin_id"

# For 'nomad volume register', provide the external ID from the storage
# provider. This field should be omitted when creating a volume with
# 'nomad volume create'
external_id = "vol-23452345"

# For 'nomad volume create', specify a snapshot ID or volume to clone. You can
# specify only one of these two fields.
snapshot_id = "snap-12345"
# clone_id    = "vol-abcdef"

# Optional: for 'nomad volume create', specify a maximum and minimum capacity.
# Registering an existing volume will record but ignore these fields.
capacity_min = "10GiB"
capacity_max = "20G"

# Required (at least one): for 'nomad volume create', specify one or more
# capabilities to validate. Registering an existing volume will record but
# ignore these fields.
capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

capability {
  access_mode     = "single-node-reader-only"
  attachment_mode = "block-device"
}

# Optional: for 'nomad volume create', specify mount options to validate for
# 'attachment_mode = "file-system". Registering an existing volume will record
# but ignore these fields.
mount_options {
  fs_type     = "ext4"
  mount_flags = ["ro"]
}

# Optional: specify one or more locations where the volume must be accessible
# from. Refer to the plugin documentation for what segment values are supported.
topology_request {
  preferred {
    topology { segments { rack = "R1" } }
  }
  required {
    topology { segments { rack = "R1" } }
    topology { segments { rack = "R2", zone = "us-east-1a" } }
  }
}

# Optional: provide any secrets specified by the plugin.
secrets {
  example_secret = "xyzzy"
}

# Optional: provide a map of keys to string values expected by the plugin.
parameters {
  skuname = "Premium_LRS"
}

# Optional: for 'nomad volume register', provide a map of keys to string
# values expected by the plugin. This field will populated automatically by
# 'nomad volume create'.
context {
  endpoint = "http://192.168.1.101:9425"
}
"#;

    const MINIMAL: &str = r#"id = "db"
type = "csi"
plugin_id = "nfs"
capability {
  access_mode = "single-node-writer"
  attachment_mode = "file-system"
}
"#;

    fn parse(src: &str) -> Result<CsiVolume, HclError> {
        parse_volume("vol.hcl", src)
    }

    fn err(src: &str) -> HclError {
        parse(src).expect_err("must fail")
    }

    fn map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn cap(access: &str, attachment: &str) -> CsiVolumeCapability {
        CsiVolumeCapability { access_mode: access.into(), attachment_mode: attachment.into() }
    }

    #[test]
    fn full_example() {
        let v = parse(FULL).expect("parses");
        assert_eq!((v.id.as_str(), v.name.as_str(), v.namespace.as_str()), ("ebs_prod_db1", "database", "default"));
        assert_eq!((v.plugin_id.as_str(), v.external_id.as_str()), ("plugin_id", "vol-23452345"));
        assert_eq!((v.snapshot_id.as_str(), v.clone_id.as_str()), ("snap-12345", ""));
        assert_eq!(v.requested_capacity_min, 10 * 1024 * 1024 * 1024);
        assert_eq!(v.requested_capacity_max, 20_000_000_000);
        assert_eq!(
            v.requested_capabilities,
            vec![cap("single-node-writer", "file-system"), cap("single-node-reader-only", "block-device")]
        );
        assert_eq!(v.mount_options, Some(CsiMountOptions { fs_type: "ext4".into(), mount_flags: vec!["ro".into()] }));
        let topologies = v.requested_topologies.expect("topology_request");
        assert_eq!(topologies.preferred, vec![CsiTopology { segments: map(&[("rack", "R1")]) }]);
        assert_eq!(
            topologies.required,
            vec![
                CsiTopology { segments: map(&[("rack", "R1")]) },
                CsiTopology { segments: map(&[("rack", "R2"), ("zone", "us-east-1a")]) },
            ]
        );
        assert_eq!(v.secrets, map(&[("example_secret", "xyzzy")]));
        assert_eq!(v.parameters, map(&[("skuname", "Premium_LRS")]));
        assert_eq!(v.context, map(&[("endpoint", "http://192.168.1.101:9425")]));
        assert!(!v.schedulable);

        // The template as Nomad ships it: its reader mode is misspelled.
        let e = err(&FULL.replace("single-node-reader-only", "single-node-reader"));
        assert_eq!((e.line, e.column), (31, 21), "{e}");
        assert!(e.message.starts_with("capability.access_mode: unknown access mode \"single-node-reader\""), "{e}");
    }

    #[test]
    fn segments_blocks_in_every_layout() {
        let topologies = r#"topology_request {
  required {
    topology {
      segments {
        "rack" = "R2"
        zone = "z" # segments { x }
      }
    }
    topology { segments { rack = "R3", row = "7" } }
    topology { segments = { rack = "R4" } }
  }
}
parameters { note = "segments { a = b }" }
"#;
        let v = parse(&format!("{MINIMAL}{topologies}")).expect("parses");
        let required = v.requested_topologies.expect("topologies").required;
        assert_eq!(required[0].segments, map(&[("rack", "R2"), ("zone", "z")]));
        assert_eq!(required[1].segments, map(&[("rack", "R3"), ("row", "7")]));
        assert_eq!(required[2].segments, map(&[("rack", "R4")]));
        assert_eq!(v.parameters, map(&[("note", "segments { a = b }")]));

        let bad = "topology_request {\n  required {\n    topology { segments { rack = 1, z = [2] } }\n  }\n}\n";
        let e = err(&format!("{MINIMAL}{bad}"));
        assert_eq!((e.line, e.message.as_str()), (10, "segments.z: expected a string, found a list"), "{e}");
        // One `segments` per topology.
        let twice = "topology_request {\n  required {\n    topology {\n      segments { a = \"1\" }\n      \
                     segments { b = \"2\" }\n    }\n  }\n}\n";
        assert_eq!(err(&format!("{MINIMAL}{twice}")).line, 12);
        // Strings and comments are left as written.
        let untouched = "a = \"x\\\" segments {\"\n# segments {\n/* segments { */\n";
        assert_eq!(segments_as_objects(untouched), untouched);
    }

    #[test]
    fn minimal_defaults() {
        let v = parse(MINIMAL).expect("parses");
        assert_eq!((v.id.as_str(), v.name.as_str(), v.namespace.as_str()), ("db", "db", "default"));
        assert_eq!(v.requested_capabilities, vec![cap("single-node-writer", "file-system")]);
        assert_eq!((v.requested_capacity_min, v.requested_capacity_max), (0, 0));
        assert_eq!((v.mount_options, v.requested_topologies), (None, None));
        assert!(v.secrets.is_empty() && v.parameters.is_empty() && v.context.is_empty());
        assert!(!v.schedulable);
    }

    #[test]
    fn humanized_sizes() {
        let cases: [(&str, i64); 10] = [
            ("\"10GiB\"", 10 << 30),
            ("\"20G\"", 20_000_000_000),
            ("\"512MiB\"", 512 << 20),
            ("\"1T\"", 1_000_000_000_000),
            ("\"100k\"", 100_000),
            ("\"100K\"", 100_000),
            ("\"2kib\"", 2048),
            ("\"1 TiB\"", 1 << 40),
            ("\"4096\"", 4096),
            ("1073741824", 1 << 30),
        ];
        for (written, bytes) in cases {
            let v = parse(&format!("{MINIMAL}capacity_min = {written}\n")).expect(written);
            assert_eq!(v.requested_capacity_min, bytes, "{written}");
        }
        let e = err(&format!("{MINIMAL}capacity_max = \"lots\"\n"));
        assert_eq!((e.line, e.column), (8, 16), "{e}");
        assert!(e.message.starts_with("capacity_max: invalid size \"lots\""), "{e}");
    }

    #[test]
    fn json_form() {
        let src = r#"{
  "ID": "db",
  "PluginID": "nfs",
  "Namespace": "",
  "ExternalID": null,
  "Secrets": null,
  "Parameters": {"server": "nas"},
  "RequestedCapacityMin": 1073741824,
  "RequestedCapacityMax": 2147483648,
  "MountOptions": {"FSType": "ext4", "MountFlags": ["noatime"]},
  "RequestedTopologies": {"Required": [{"Segments": {"rack": "R1"}}], "Preferred": null},
  "RequestedCapabilities": [
    {"AccessMode": "multi-node-multi-writer", "AttachmentMode": "file-system"}
  ],
  "AccessMode": "ignored-field-of-the-api-output",
  "Schedulable": true
}"#;
        let v = parse(src).expect("parses");
        assert_eq!((v.id.as_str(), v.name.as_str(), v.namespace.as_str()), ("db", "db", "default"));
        assert_eq!((v.requested_capacity_min, v.requested_capacity_max), (1 << 30, 2 << 30));
        assert_eq!(v.requested_capabilities, vec![cap("multi-node-multi-writer", "file-system")]);
        assert_eq!(v.mount_options.expect("mount options").fs_type, "ext4");
        assert_eq!(v.parameters, map(&[("server", "nas")]));
        let topologies = v.requested_topologies.expect("topologies");
        assert_eq!((topologies.required.len(), topologies.preferred.len()), (1, 0));
        assert!(!v.schedulable);
    }

    #[test]
    fn json_errors() {
        let caps =
            r#""RequestedCapabilities": [{"AccessMode": "single-node-writer", "AttachmentMode": "file-system"}]"#;
        let e = err(&format!("{{\"ID\": \"db\",\n{caps}\n}}"));
        assert_eq!(e.message, "PluginID: missing required field");

        let src = r#"{"ID": "db", "PluginID": "p",
 "RequestedCapabilities": [
  {"AccessMode": "single-node-writer", "AttachmentMode": "file-system"},
  {"AccessMode": "everyone", "AttachmentMode": "file-system"}]}"#;
        let e = err(src);
        assert_eq!((e.line, e.column), (4, 4), "{e}");
        assert!(e.message.starts_with("RequestedCapabilities[1].AccessMode: unknown access mode \"everyone\""), "{e}");

        let e = err(&format!(
            "{{\"ID\": \"db\", \"PluginID\": \"p\",\n\
             \"RequestedCapacityMin\": 20, \"RequestedCapacityMax\": 10, {caps}}}"
        ));
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.starts_with("RequestedCapacityMin: 20 bytes"), "{e}");

        let e = err("{\"ID\": \"db\",\n  \"RequestedCapacityMin\": \"10GiB\"}");
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(e.message.starts_with("RequestedCapacityMin: invalid type"), "{e}");

        let e = err("{\"ID\": \"db\",\n  \"PluginID\": }");
        assert_eq!((e.file.as_str(), e.line), ("vol.hcl", 2), "{e}");
        assert!(e.message.starts_with("invalid volume JSON: expected value"), "{e}");

        let e = err("  {\"ID\": \"db\", \"Foo\": [1, 2}");
        assert!(e.message.starts_with("invalid volume JSON"), "{e}");
    }

    #[test]
    fn unknown_access_mode_names_field_value_and_line() {
        let src = MINIMAL.replace("access_mode = \"single-node-writer\"", "access_mode = \"everyone\"");
        let e = err(&src);
        assert_eq!((e.file.as_str(), e.line, e.column), ("vol.hcl", 5, 17), "{e}");
        assert!(e.to_string().starts_with("vol.hcl:5:17: capability.access_mode: unknown access mode \"everyone\""));
        for mode in access_mode::ALL {
            assert!(e.message.contains(mode), "{e}");
        }

        let src = MINIMAL.replace("\"file-system\"", "\"nfs\"");
        let e = err(&src);
        assert_eq!(e.line, 6, "{e}");
        assert!(e.message.contains("capability.attachment_mode: unknown attachment mode \"nfs\""), "{e}");
        assert!(e.message.contains("file-system, block-device"), "{e}");

        let e = err(&MINIMAL.replace("  attachment_mode = \"file-system\"\n", ""));
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.starts_with("capability.attachment_mode: missing;"), "{e}");
    }

    #[test]
    fn capacity_min_above_max() {
        let e = err(&format!("{MINIMAL}capacity_min = \"20GiB\"\ncapacity_max = \"10GiB\"\n"));
        assert_eq!(e.line, 8, "{e}");
        assert!(
            e.message.starts_with("capacity_min: 21474836480 bytes (20.0 GiB) is greater than capacity_max"),
            "{e}"
        );
        // Equal is fine, and a lone bound is not compared.
        parse(&format!("{MINIMAL}capacity_min = \"10GiB\"\ncapacity_max = \"10GiB\"\n")).expect("equal bounds");
        parse(&format!("{MINIMAL}capacity_min = \"10GiB\"\n")).expect("no max");
    }

    #[test]
    fn required_fields() {
        let e = err(&MINIMAL.replace("plugin_id = \"nfs\"\n", ""));
        assert_eq!(e.to_string(), "vol.hcl:1:1: plugin_id: missing required field");
        let e = err(&MINIMAL.replace("plugin_id = \"nfs\"", "plugin_id = \"\""));
        assert_eq!((e.line, e.message.as_str()), (3, "plugin_id: missing required field"));
        let e = err(&MINIMAL.replace("id = \"db\"\n", ""));
        assert_eq!(e.message, "id: missing required field");
        let e = err(&MINIMAL.replace("type = \"csi\"\n", ""));
        assert!(e.message.starts_with("type: missing required field"), "{e}");
        let e = err("id = \"db\"\ntype = \"csi\"\nplugin_id = \"nfs\"\n");
        assert_eq!(e.message, "capability: at least one capability is required");
    }

    #[test]
    fn host_and_other_types_are_rejected() {
        let e = err(&MINIMAL.replace("\"csi\"", "\"host\""));
        assert_eq!((e.line, e.column), (2, 8), "{e}");
        assert!(e.message.contains("dynamic host volumes"), "{e}");
        assert!(e.message.contains("not supported by berth"), "{e}");
        let e = err(&MINIMAL.replace("\"csi\"", "\"nfs\""));
        assert!(e.message.starts_with("type: unsupported volume type \"nfs\""), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = err(&format!("{MINIMAL}size = \"10GiB\"\n"));
        assert_eq!(e.to_string(), "vol.hcl:8:1: unsupported argument \"size\"");
        let e = err(&format!("{MINIMAL}constraint {{\n}}\n"));
        assert_eq!(e.to_string(), "vol.hcl:8:1: unsupported block type \"constraint\"");
        let e = err(&MINIMAL.replace("  attachment_mode", "  readonly = true\n  attachment_mode"));
        assert!(e.to_string().starts_with("vol.hcl:6:3: unsupported argument \"readonly\" in capability"), "{e}");
        let e = err(&format!("{MINIMAL}mount_options {{\n  fs_type = \"ext4\"\n  options = \"x\"\n}}\n"));
        assert!(e.to_string().starts_with("vol.hcl:10:3: unsupported argument \"options\" in mount_options"), "{e}");
        let e = err(&format!("{MINIMAL}topology_request {{\n  required {{\n    zone = \"a\"\n  }}\n}}\n"));
        assert!(e.to_string().starts_with("vol.hcl:10:5: unsupported argument \"zone\" in required"), "{e}");
        let e =
            err(&format!("{MINIMAL}topology_request {{\n  preferred {{\n    topology {{ rack = \"a\" }}\n  }}\n}}\n"));
        assert!(e.message.starts_with("unsupported argument \"rack\" in topology"), "{e}");
        let e = err(&format!("{MINIMAL}topology_request {{\n  optional {{\n  }}\n}}\n"));
        assert!(e.message.starts_with("unsupported block type \"optional\" in topology_request"), "{e}");
    }

    #[test]
    fn map_values_must_be_strings() {
        let e = err(&format!("{MINIMAL}parameters {{\n  sizes = [1, 2]\n}}\n"));
        assert_eq!(e.line, 9, "{e}");
        assert!(e.message.starts_with("parameters.sizes: expected a string"), "{e}");
    }

    #[test]
    fn snapshot_and_clone_are_exclusive() {
        let e = err(&format!("{MINIMAL}snapshot_id = \"snap-1\"\nclone_id = \"vol-1\"\n"));
        assert_eq!(e.line, 9, "{e}");
        assert!(e.message.contains("snapshot_id and clone_id are mutually exclusive"), "{e}");
        let src = r#"{"ID": "a", "PluginID": "p", "SnapshotID": "s", "CloneID": "c",
 "RequestedCapabilities": [{"AccessMode": "single-node-writer", "AttachmentMode": "file-system"}]}"#;
        let e = err(src);
        assert!(e.message.contains("SnapshotID and CloneID are mutually exclusive"), "{e}");
    }

    #[test]
    fn malformed_hcl() {
        let e = err("id = \"db\"\ncapability {\n  access_mode = = \"x\"\n}\n");
        assert_eq!((e.file.as_str(), e.line), ("vol.hcl", 3), "{e}");
        assert!(e.message.starts_with("syntax error"), "{e}");
        let e = err("id = \"db\"\ntype = [\"csi\"]\n");
        assert!(e.to_string().starts_with("vol.hcl:2:8: type: expected a string"), "{e}");
        let e = err(&format!("{MINIMAL}mount_options {{\n}}\nmount_options {{\n}}\n"));
        assert!(e.to_string().starts_with("vol.hcl:10:1: only one \"mount_options\" block is allowed"), "{e}");
    }
}
