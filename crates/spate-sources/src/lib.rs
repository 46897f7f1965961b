//! Receivers and replayable sources: socket, text-file directory, queue, custom receivers.
