//! FileSystem and Clock seams: StdFs for real disks, SimFs that models unsynced writes, crashes and torn writes.
