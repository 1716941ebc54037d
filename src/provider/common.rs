//! What the providers share where their APIs behave alike: the frame of a listing and of an
//! export, binaries downloaded again only when they change, and what GitHub and Gitea (whose
//! API follows GitHub's) do the same way: their repository objects, the incremental issue list
//! and releases with their assets.

use std::collections::HashSet;

use age::secrecy::SecretString;
use serde_json::{Value, json};

use super::http::{ApiClient, Auth, Cache};
use super::{Export, Listing, MetadataMap, MetadataSink, ProviderError, RepoInfo, SourceConfig};
use super::{bool_field, segment, str_field};

/// `--api-url`, or the provider's default, without a trailing `/`.
pub(crate) fn api_base(source: &SourceConfig, default: &str) -> String {
    source
        .api_url
        .clone()
        .unwrap_or_else(|| default.into())
        .trim_end_matches('/')
        .to_string()
}

/// The API client of `source`, at `--api-url` or `default`.
pub(crate) fn connect<'i>(
    source: &SourceConfig,
    cache: Cache<'i>,
    default: &str,
    auth: Option<Auth>,
    accept: &'static str,
    headers: Vec<(&'static str, &'static str)>,
) -> Result<ApiClient<'i>, ProviderError> {
    let base = api_base(source, default);
    ApiClient::new(&base, auth, accept, headers, cache, &source.http)
}

/// The API client, owner and token of a source whose token `auth` turns into the API's
/// authorization (Gitea and GitLab differ only in that).
pub(crate) fn token_client<'i>(
    source: &SourceConfig,
    cache: Cache<'i>,
    default: &str,
    auth: impl Fn(&SecretString) -> Auth,
) -> Result<(ApiClient<'i>, String, Option<SecretString>), ProviderError> {
    let token = source.token()?;
    let auth = token.as_ref().map(auth);
    let api = connect(source, cache, default, auth, "application/json", vec![])?;
    Ok((api, source.owner.clone(), token))
}

/// A pull request's own parts: the pull request, its reviews and the comments of its reviews.
pub(crate) type PullParts = (Value, Vec<Value>, Vec<Value>);

/// One issue with its comments, or one pull request with its comments, reviews and review
/// comments, as GitHub and Gitea store them. `comments` is asked only when the item may have
/// some (a count of 0 spares the request), `pull` only for a pull request.
pub(crate) fn issue_document<P: ?Sized>(
    provider: &mut P,
    number: u64,
    item: &Value,
    is_pull: bool,
    comments: impl FnOnce(&mut P) -> Result<Vec<Value>, ProviderError>,
    pull: impl FnOnce(&mut P) -> Result<PullParts, ProviderError>,
) -> Result<(String, Value), ProviderError> {
    let may_have_comments = item.get("comments").and_then(Value::as_u64).unwrap_or(1) > 0;
    let comments = if may_have_comments {
        comments(provider)?
    } else {
        Vec::new()
    };
    if !is_pull {
        return Ok((
            format!("issues/{number}.json"),
            json!({ "issue": item, "comments": comments }),
        ));
    }
    let (pull, reviews, review_comments) = pull(provider)?;
    Ok((
        format!("pulls/{number}.json"),
        json!({ "pull_request": pull, "comments": comments, "reviews": reviews, "review_comments": review_comments }),
    ))
}

/// Stores lists kept whole every run (labels, milestones): the full answer of each
/// `(path, url)`.
pub(crate) fn put_lists(
    api: &mut ApiClient<'_>,
    out: &mut Export<'_>,
    lists: [(&str, String); 2],
) -> Result<(), ProviderError> {
    for (path, url) in lists {
        let items = api.get_all(&url)?;
        put(&mut out.map, out.sink, path, &Value::Array(items))?;
    }
    Ok(())
}

/// A listing read with `read`, in full-name order, each repository once; items `read` cannot
/// make sense of are named in `dropped` by the first of `names` they hold as a string.
pub(crate) fn listing(
    listed: &[Value],
    names: &[&str],
    read: impl Fn(&Value) -> Option<RepoInfo>,
) -> Listing {
    let mut repos = Vec::new();
    let mut dropped = Vec::new();
    for (i, item) in listed.iter().enumerate() {
        match read(item) {
            Some(repo) => repos.push(repo),
            None => dropped.push(
                names
                    .iter()
                    .find_map(|n| item.get(*n).and_then(Value::as_str))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("item {} of the listing", i + 1)),
            ),
        }
    }
    repos.sort_by(|a, b| a.full_name.cmp(&b.full_name));
    repos.dedup_by(|a, b| a.full_name == b.full_name);
    Listing { repos, dropped }
}

/// The map an export starts from: the previous snapshot's documents and state, if any.
pub(crate) fn start_map(previous: Option<&MetadataMap>, provider: &str) -> MetadataMap {
    let mut map = previous.cloned().unwrap_or_default();
    map.format = 1;
    map.provider = provider.into();
    map
}

/// Stores `value` as the document at `path`.
pub(crate) fn put(
    map: &mut MetadataMap,
    sink: &mut dyn MetadataSink,
    path: &str,
    value: &Value,
) -> Result<(), ProviderError> {
    map.documents
        .insert(path.into(), sink.document(value)?.to_hex());
    Ok(())
}

/// Keeps a binary (a release asset, a download) at `path`: it is downloaded from `url()` and
/// stored unless the state under `state_key` says the one held there is `stamp` already.
pub(crate) fn keep_binary(
    api: &mut ApiClient<'_>,
    map: &mut MetadataMap,
    sink: &mut dyn MetadataSink,
    path: &str,
    state_key: String,
    stamp: String,
    url: impl FnOnce() -> Result<String, ProviderError>,
) -> Result<(), ProviderError> {
    let unchanged = map.state.get(&state_key) == Some(&stamp) && map.documents.contains_key(path);
    if unchanged {
        return Ok(());
    }
    let url = url()?;
    let mut stored = None;
    api.download(&url, &mut |input| {
        stored = Some(sink.binary(input)?);
        Ok(())
    })?;
    if let Some(id) = stored {
        map.documents.insert(path.into(), id.to_hex());
        map.state.insert(state_key, stamp);
    }
    Ok(())
}

/// Names the stored bytes in the API's description of a binary: `gitvault_content`.
pub(crate) fn name_content(item: &mut Value, path: String) {
    if let Some(obj) = item.as_object_mut() {
        obj.insert("gitvault_content".into(), Value::String(path));
    }
}

/// The URL of a repository's wiki: GitHub, Gitea and GitLab keep it beside the repository
/// (Bitbucket below it: `<clone URL>/wiki`).
pub(crate) fn wiki_url(clone_url: &str) -> String {
    let base = clone_url.strip_suffix(".git").unwrap_or(clone_url);
    format!("{base}.wiki.git")
}

/// A repository as GitHub and Gitea describe it.
pub(crate) fn github_like_repo(v: &Value) -> Option<RepoInfo> {
    let full_name = str_field(v, "full_name")?;
    let clone_url = str_field(v, "clone_url")?;
    let wiki_url = bool_field(v, "has_wiki").then(|| wiki_url(&clone_url));
    Some(RepoInfo {
        short_name: str_field(v, "name").unwrap_or_else(|| full_name.clone()),
        full_name,
        clone_url,
        wiki_url,
        fork: bool_field(v, "fork"),
        archived: bool_field(v, "archived"),
        private: bool_field(v, "private"),
        updated_at: str_field(v, "updated_at"),
    })
}

/// Issues and pull requests of GitHub and Gitea (one list for both), changed since the newest
/// one held. `list(provider, url)` reads the list at `list_url` with `&since=` added once a
/// bound is known; `document(provider, number, item)` makes an item's document and its path.
///
/// The list is asked again with the advanced `since` until it stops moving, so that the URL
/// the next run sends is one whose answer is cached: an unchanged repository then costs only
/// 304s, and an update between two requests is never skipped. `since` being inclusive, the
/// items updated exactly at it come back every time; those already held at that timestamp
/// (state `issues_at_since`) are not fetched again.
///
/// `updated_at` is compared and recorded as `normalise` writes it (`None`: unreadable, never
/// a bound); the form must be one whose text order is time order.
pub(crate) fn export_issues_since<P: ?Sized>(
    provider: &mut P,
    list_url: &str,
    map: &mut MetadataMap,
    sink: &mut dyn MetadataSink,
    normalise: fn(&str) -> Option<String>,
    mut list: impl FnMut(&mut P, &str) -> Result<Vec<Value>, ProviderError>,
    mut document: impl FnMut(&mut P, u64, &Value) -> Result<(String, Value), ProviderError>,
) -> Result<(), ProviderError> {
    let mut since = map.state.get("issues_since").cloned();
    let mut done: HashSet<(u64, String)> = HashSet::new();
    if let (Some(s), Some(held)) = (&since, map.state.get("issues_at_since")) {
        for n in held.split(',').filter_map(|n| n.parse::<u64>().ok()) {
            done.insert((n, s.clone()));
        }
    }
    for _ in 0..4 {
        let mut url = list_url.to_string();
        if let Some(s) = &since {
            url.push_str(&format!("&since={s}"));
        }
        let items = list(provider, &url)?;
        let mut newest = since.clone();
        for item in &items {
            let Some(number) = item.get("number").and_then(Value::as_u64) else {
                continue;
            };
            let raw = str_field(item, "updated_at").unwrap_or_default();
            let updated = normalise(&raw);
            if !done.insert((number, updated.clone().unwrap_or(raw))) {
                continue;
            }
            let (path, doc) = document(provider, number, item)?;
            put(map, sink, &path, &doc)?;
            if let Some(updated) = updated
                && newest.as_ref().is_none_or(|n| updated > *n)
            {
                newest = Some(updated);
            }
        }
        if newest == since {
            break;
        }
        since = newest;
    }
    if let Some(s) = since {
        let mut at_since: Vec<u64> = done
            .iter()
            .filter(|(_, u)| *u == s)
            .map(|(n, _)| *n)
            .collect();
        at_since.sort_unstable();
        let list: Vec<String> = at_since.iter().map(u64::to_string).collect();
        map.state.insert("issues_at_since".into(), list.join(","));
        map.state.insert("issues_since".into(), s);
    }
    Ok(())
}

/// Releases as GitHub and Gitea list them: `releases/{id}.json` each, and every asset's bytes
/// at `release-assets/{asset id}/{name}`, downloaded from `url(asset, asset id)` and again
/// only when `stamp(asset)` changes.
pub(crate) fn export_releases(
    api: &mut ApiClient<'_>,
    releases: &[Value],
    map: &mut MetadataMap,
    sink: &mut dyn MetadataSink,
    stamp: impl Fn(&Value) -> String,
    url: impl Fn(&Value, u64) -> String,
) -> Result<(), ProviderError> {
    for release in releases {
        let Some(id) = release.get("id").and_then(Value::as_u64) else {
            continue;
        };
        let mut doc = release.clone();
        if let Some(assets) = doc.get_mut("assets").and_then(Value::as_array_mut) {
            for asset in assets.iter_mut() {
                let Some(asset_id) = asset.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let name = segment(&str_field(asset, "name").unwrap_or_default());
                let path = format!("release-assets/{asset_id}/{name}");
                let state_key = format!("asset:{asset_id}");
                keep_binary(api, map, sink, &path, state_key, stamp(asset), || {
                    Ok(url(asset, asset_id))
                })?;
                name_content(asset, path);
            }
        }
        put(map, sink, &format!("releases/{id}.json"), &doc)?;
    }
    Ok(())
}
