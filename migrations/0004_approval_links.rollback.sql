DROP TABLE IF EXISTS approval_link_uses;
