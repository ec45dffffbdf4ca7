-- agent-builder 0004: one-tap approval links are single-use; a link's nonce is written here when
-- it is used, in the same transaction as the approval or rejection it performs.
-- depends: 0003_state_machine
CREATE TABLE approval_link_uses (
    nonce           text PRIMARY KEY,
    automation_id   bigint NOT NULL,
    build_id        bigint NOT NULL,
    action          text NOT NULL CHECK (action IN ('approve', 'reject')),
    used_at         timestamptz NOT NULL DEFAULT now(),
    remote_addr     text
);
