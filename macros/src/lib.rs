//! `#[micro::main]` and `#[micro::test]`: run an `async fn` in an actix system, without a
//! direct dependency on actix. Use them through the `actix-micro` crate (imported as `micro`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proc_macro::TokenStream;

/// Runs an `async fn main` in an actix system: `#[micro::main] async fn main() { .. }`.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    delegate("main", args, item)
}

/// Runs an `async fn` test in an actix system: `#[micro::test] async fn it_works() { .. }`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    delegate("test", args, item)
}

/// Puts actix's own attribute on the item, pointed at the system that `micro` re-exports, so
/// the expansion names no crate the user has not imported. The item keeps its spans.
fn delegate(which: &str, args: TokenStream, item: TokenStream) -> TokenStream {
    let attr = if args.is_empty() {
        format!("#[::micro::__private::{which}(system = \"::micro::__private::System\")]")
    } else {
        format!("::core::compile_error!(\"#[micro::{which}] takes no arguments\");")
    };
    let mut out: TokenStream = match attr.parse() {
        Ok(tokens) => tokens,
        Err(_) => return TokenStream::new(),
    };
    out.extend(item);
    out
}
