"""Writing order events: the one use case intake and dispatch share, layer by layer.

Read top to bottom, one file per layer:

- `request.py`: `AppendRequest`, everything one write needs, and its answer
  `Recorded`.
- `posts.py`: an HTTP-shaped event post (`EventPost`) checked and turned into an
  `AppendRequest` (its type, its data, the request digest). Raises domain errors.
- `writer.py`: the use case. Load the order's stored state, `decide`
  (shared.domain.lifecycle), append in one statement (shared.db.event_store), answer
  retries, remember refusals (shared.db.refusals), decide again after a lost race.

Nothing here imports `shared.http`: the HTTP edge maps domain errors to statuses.
"""
