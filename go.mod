module github.com/cropq/cropq

go 1.26.8

require (
	github.com/muesli/smartcrop v0.3.0 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/image v0.47.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)
