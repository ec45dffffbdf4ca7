-- Spend a one-tap link (no row back: it was used before).
INSERT INTO approval_link_uses (nonce, automation_id, build_id, action, remote_addr)
VALUES (%(nonce)s, %(automation_id)s, %(build_id)s, %(action)s, %(remote_addr)s)
ON CONFLICT (nonce) DO NOTHING
RETURNING nonce
