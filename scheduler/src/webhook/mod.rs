//! Webhook intake: signature verification and payload parsing for GitHub, GitLab, Gitea/Forgejo.
