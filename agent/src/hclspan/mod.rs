//! A thin layer over hcl-edit shared by every HCL file berth reads (job
//! specs, the agent configuration, CSI volume specs): parsing with byte
//! spans, `file:line:col` errors, Nomad-style expression evaluation with
//! Nomad's function library, the
//! HCL1 quoted-key compatibility pre-pass and a decoder that walks a body
//! and rejects unknown keys.
//!
//! ```
//! use berth::hclspan::{Decoder, Scope, Source};
//!
//! let src = Source::parse("app.hcl", "name = \"web\"\nport = 8080\n").unwrap();
//! let scope = Scope::new();
//! let mut body = Decoder::root(&src, &scope);
//! assert_eq!(body.string("name").unwrap().as_deref(), Some("web"));
//! assert_eq!(body.number::<u16>("port").unwrap(), Some(8080));
//! body.finish().unwrap();
//! ```

mod collection_functions;
mod crypto_functions;
mod decode;
mod error;
mod eval;
mod file_functions;
mod func_support;
pub mod functions;
mod hcl1;
mod net_functions;
mod set_time_functions;
mod source;
mod type_expr;

pub use decode::{Block, Decoder};
pub use error::{HclError, Pos};
pub use eval::{kind, Scope};
pub use source::Source;

/// Re-exported so callers can build variable values for a [`Scope`].
pub use hcl::Value;

#[cfg(test)]
mod tests;
