package testenv

import (
	"bufio"
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// redisDo sends one inline command and returns the first reply line.
func redisDo(t *testing.T, addr, cmd string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte(cmd + "\r\n"))
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	if strings.HasPrefix(line, "$") && !strings.HasPrefix(line, "$-1") {
		line, err = r.ReadString('\n')
		require.NoError(t, err)
	}
	return strings.TrimSpace(line)
}

func TestRedisRestartKeepsAOF(t *testing.T) {
	r := Redis(t)
	assert.Equal(t, "+OK", redisDo(t, r.Addr(), "SET k v1"))
	require.NoError(t, r.Stop(context.Background()))
	_, err := net.Dial("tcp", r.Addr())
	require.Error(t, err, "stopped means not listening")
	require.NoError(t, r.Start(context.Background()))
	assert.Equal(t, "v1", redisDo(t, r.Addr(), "GET k"), "the append-only file survives a restart")
}

func TestMinIOBucketAndRestart(t *testing.T) {
	m := MinIO(t)
	client, bucket := MinIOBucket(t, m)
	ctx := context.Background()
	_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("a"), Body: strings.NewReader("hello")})
	require.NoError(t, err)

	require.NoError(t, m.Stop(ctx))
	_, err = http.Get(m.Endpoint() + "/minio/health/live")
	require.Error(t, err)
	require.NoError(t, m.Start(ctx))

	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("a")})
	require.NoError(t, err)
	defer out.Body.Close()
	assert.Equal(t, int64(5), aws.ToInt64(out.ContentLength))
}

// Needs is the one place a test skips: elsewhere a skip would let CI pass
// without the servers a test needs, where it must fail with the install
// command.
func TestOnlyTestenvSkips(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	here, err := filepath.Abs(".")
	require.NoError(t, err)
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == here || (path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			// t.Skip…, tb.Skip…, b.Skip…: the project names its testing
			// values so (a decoder's Skip is not a test's).
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			recv, ok := sel.X.(*ast.Ident)
			if ok && (recv.Name == "t" || recv.Name == "tb" || recv.Name == "b") && (sel.Sel.Name == "Skip" || sel.Sel.Name == "Skipf" || sel.Sel.Name == "SkipNow") {
				t.Errorf("%s: a test skips on its own: call testenv.Needs (skips under -short only) or a testenv starter", fset.Position(sel.Pos()))
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, files, 50, "the walk found the project's tests")
}
