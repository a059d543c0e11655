//! Git on the server: project mirrors, files at a commit, changed paths, smart HTTP for runners.
