package records

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAppendSetBits(t *testing.T) {
	bm := []byte{0b1000_0001, 0, 0b0110_0000} // places 0, 7, 17, 18
	for _, tc := range []struct {
		skip, take int64
		want       []int64
	}{
		{0, 10, []int64{0, 7, 17, 18}},
		{1, 2, []int64{7, 17}},
		{2, 10, []int64{17, 18}},
		{3, 1, []int64{18}},
		{4, 5, nil},
		{0, 0, nil},
	} {
		assert.Equal(t, tc.want, appendSetBits(nil, bm, tc.skip, tc.take), "skip %d take %d", tc.skip, tc.take)
	}
}
