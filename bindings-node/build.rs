//! Link settings for a Node addon (on Linux nothing beyond the defaults; see napi-build).

fn main() {
    napi_build::setup();
}
