//! The providers' conditional-request cache (ETags, `Link` headers, bodies).

use super::*;

/// An API answer kept for conditional requests: its ETag, `Link` header and body.
pub struct CachedResponse {
    pub etag: String,
    pub link: Option<String>,
    pub body: Vec<u8>,
}

impl Index {
    /// A cached API response (conditional requests).
    pub fn http_cached(&self, url: &str) -> Result<Option<CachedResponse>, IndexError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT etag, link, body FROM http_cache WHERE url = ?1")?;
        Ok(stmt
            .query_row(params![url], |r| {
                Ok(CachedResponse {
                    etag: r.get(0)?,
                    link: r.get(1)?,
                    body: r.get(2)?,
                })
            })
            .optional()?)
    }

    pub fn http_store(
        &self,
        url: &str,
        etag: &str,
        link: Option<&str>,
        body: &[u8],
    ) -> Result<(), IndexError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO http_cache (url, etag, link, body) VALUES (?1, ?2, ?3, ?4)",
            params![url, etag, link, body],
        )?;
        Ok(())
    }
}
