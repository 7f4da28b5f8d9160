bucket         = "spacemusic-staging-tofu-state"
key            = "spacemusic/staging.tfstate"
region         = "eu-west-1"
dynamodb_table = "spacemusic-staging-tofu-locks"
encrypt        = true
