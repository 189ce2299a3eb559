-- 0004 is owned by the accessibility domain (branch access). This placeholder only keeps
-- the versions 1..N gapless on the marketplace branch; MERGE NOTE: delete this file when
-- the accessibility migration 0004 lands (it changes nothing in the schema).
SELECT 1;
