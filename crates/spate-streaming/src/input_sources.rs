//! Built-in input sources (`socket_text_stream`, `text_file_stream`) as an inherent
//! `impl StreamingContext` block on top of [`StreamingContext::receiver_stream`] and
//! [`StreamingContext::replayable_stream`]. Owned by the sources work; filled in there.
