package records

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ServedAs records that id is fed to the workers in lane rather than its
// own (status.Record.ServedAs), provided its record is still queued. It is
// a narrow update of that one field, in one script: a worker's transition
// (which WATCHes the key) is never lost or undone by it, the record's
// expiry stays, and a queued record stays lean. It reports whether it
// wrote: a missing record, one no longer queued (canceled meanwhile) or
// one marked already is left as it is.
func (s *Store) ServedAs(ctx context.Context, id, lane string) (bool, error) {
	n, err := servedAsScript.Run(ctx, s.rdb, []string{s.Key(id)}, lane).Int()
	if err != nil {
		return false, fmt.Errorf("status: %s served as %s: %w", id, lane, err)
	}
	return n == 1, nil
}

// servedAsScript appends "servedAs" to the JSON record KEYS[1] when its
// state is queued and it has none: the record is cropq's own encoding (an
// object ending in '}'), so the field is added without re-encoding the
// rest (Lua's cjson would round numbers and reorder fields).
var servedAsScript = redis.NewScript(`
local b = redis.call('GET', KEYS[1])
if not b or string.sub(b, -1) ~= '}' then return 0 end
local ok, rec = pcall(cjson.decode, b)
if not ok or type(rec) ~= 'table' or rec.state ~= 'queued' or rec.servedAs ~= nil then return 0 end
redis.call('SET', KEYS[1], string.sub(b, 1, -2) .. ',"servedAs":' .. cjson.encode(ARGV[1]) .. '}', 'KEEPTTL')
return 1
`)
