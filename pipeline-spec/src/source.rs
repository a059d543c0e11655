//! Source files and positions: every node the loader builds remembers where it came from.

use std::fmt;

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A position in a source file. Lines and columns are 1-based, columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    pub file: FileId,
    pub line: u32,
    pub col: u32,
}

impl Span {
    pub const fn new(file: FileId, line: u32, col: u32) -> Span {
        Span { file, line, col }
    }
}

/// Where a loaded file came from: the project it belongs to and its path inside that project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The name shown in diagnostics (a path as the user would type it).
    pub display: String,
    /// `None` for the pipeline's own project.
    pub project: Option<String>,
    /// Path inside the project, without a leading `/`.
    pub path: String,
}

/// All the files a pipeline was loaded from, in the order they were read.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, file: SourceFile) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(file);
        id
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn display(&self, id: FileId) -> &str {
        self.get(id).map_or("<unknown>", |f| f.display.as_str())
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// Formats a span as `FILE:LINE:COL`.
    pub fn locate(&self, span: Span) -> Located<'_> {
        Located { map: self, span }
    }
}

/// A span with its file name, displayable as `FILE:LINE:COL`.
pub struct Located<'a> {
    map: &'a SourceMap,
    span: Span,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.map.display(self.span.file), self.span.line, self.span.col)
    }
}
