# freshlabel: `make demo` runs the platform end to end, `make test` runs the test suite
# (`make test-unit`, `make test-stack`: its two tiers), `make lint` runs ruff and mypy.
PYTHON ?= python3
VENV := .venv
FLINK_VENV := .venv-flink
PIP_FLAGS := -q --disable-pip-version-check

.PHONY: setup demo test test-unit test-stack lint lock clean teacher images
setup: $(VENV)/.installed $(FLINK_VENV)/.installed .tools/.installed

$(VENV)/.installed: requirements/platform.txt requirements/platform.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r requirements/platform.txt -c requirements/platform.lock
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

$(FLINK_VENV)/.installed: requirements/flink.txt requirements/flink.lock pyproject.toml
	test -x $(FLINK_VENV)/bin/python || $(PYTHON) -m venv $(FLINK_VENV)
	$(FLINK_VENV)/bin/pip install $(PIP_FLAGS) -r requirements/flink.txt -c requirements/flink.lock
	$(FLINK_VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

# The broker binary and the Kafka connector jars, checked against pinned sha256 sums.
.tools/.installed: infra/artifacts.py $(VENV)/.installed
	$(VENV)/bin/python -m infra.fetch_tools
	touch $@

demo: setup
	$(VENV)/bin/freshlabel demo

# The real-data teacher: train on CrowdFlower (or FRESHLABEL_TEACHER_DATA, same columns),
# then export it as version 1 of the Triton repository that `freshlabel up` serves.
FRESHLABEL_TEACHER_DATA ?= ../shared/data/crowdflower/train.parquet
TEACHER_DIR := .freshlabel/teachers/crowdflower
teacher: setup
	$(VENV)/bin/freshlabel teacher train --data $(FRESHLABEL_TEACHER_DATA) --columns crowdflower --out $(TEACHER_DIR)
	$(VENV)/bin/freshlabel teacher export --model $(TEACHER_DIR) --repo .freshlabel/triton-repo --version 1

# Two tiers (markers set in tests/conftest.py): the unit tier starts no server (no broker,
# object store, Flink or Triton) and runs in under a minute; the stack tier is every test that
# starts servers or trains a model. `make test` runs both in one session.
UNIT_TESTS := not stack and not slow
test: setup
	$(VENV)/bin/python -m pytest

test-unit: setup
	$(VENV)/bin/python -m pytest -m "$(UNIT_TESTS)"

test-stack: setup
	$(VENV)/bin/python -m pytest -m "not ($(UNIT_TESTS))"

# mypy reads its files and options from pyproject.toml ([tool.mypy]).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Re-pin every transitive dependency after changing requirements/*.txt.
lock:
	rm -rf /tmp/freshlabel-lock && $(PYTHON) -m venv /tmp/freshlabel-lock
	/tmp/freshlabel-lock/bin/pip install $(PIP_FLAGS) -r requirements/platform.txt
	/tmp/freshlabel-lock/bin/pip freeze --exclude-editable > requirements/platform.lock
	rm -rf /tmp/freshlabel-lock && $(PYTHON) -m venv /tmp/freshlabel-lock
	/tmp/freshlabel-lock/bin/pip install $(PIP_FLAGS) -r requirements/flink.txt
	/tmp/freshlabel-lock/bin/pip freeze --exclude-editable > requirements/flink.lock
	rm -rf /tmp/freshlabel-lock

# The production images (infra/images/*/Dockerfile; docs/operations.md). Not built by CI here
# (no docker); tests/test_images.py checks their pins against the lock files instead.
# FLINK_VERSION comes from the lock, so the job image runs the Flink that PyFlink was built for.
# With PROFILE=infra/profiles/production.yaml the tags are the ones the rendered manifests use
# (deploy.registry, deploy.*_image, deploy.image_tag); without, freshlabel-*:<git sha>.
PROFILE ?=
FLINK_VERSION := $(shell sed -n 's/^apache-flink==//p' requirements/flink.lock)
ifneq ($(PROFILE),)
IMAGES_NEED := $(VENV)/.installed
IMAGE_REFS = $(shell FRESHLABEL_CONFIG=$(PROFILE) $(VENV)/bin/python -c "from infra.config import load_settings; d = load_settings().deploy; print(*(d.image(n) for n in (d.flink_image, d.platform_image, d.triton_image)))")
else
IMAGE_REFS = $(foreach n,flink platform triton,freshlabel-$(n):$(shell git rev-parse --short HEAD))
endif
images: $(IMAGES_NEED)
	docker build -f infra/images/flink/Dockerfile --build-arg FLINK_VERSION=$(FLINK_VERSION) -t $(word 1,$(IMAGE_REFS)) .
	docker build -f infra/images/platform/Dockerfile -t $(word 2,$(IMAGE_REFS)) .
	docker build -f infra/images/triton/Dockerfile -t $(word 3,$(IMAGE_REFS)) .

clean:
	rm -rf $(VENV) $(FLINK_VENV) .tools
