"""A generic CRUD test mixin for one REST resource (in the spirit of netbox's APIViewTestCase).

A test class sets `base_url`, `model`, `factory`, `create_data`, `update_data` (a complete PUT body for an object
made by the factory) and `patch_data`; `prepare()` may create related rows first. Each inherited test checks one
behaviour every resource shares: list, retrieve, create, update, partial update, delete, 404, 409 on a duplicate,
400 on unknown or missing fields, authentication, and the configuration revision bump.
"""

import copy

import pytest

from gateway_admin.models import ConfigRevision

__all__ = ("CRUDTests",)


class CRUDTests:
    base_url: str
    model = None
    factory = None
    create_data: dict = {}
    update_data: dict = {}
    patch_data: dict = {}
    # Keys a response must never contain a value for (secrets).
    secret_fields: tuple[str, ...] = ()

    @pytest.fixture(autouse=True)
    def _prepare(self, db):
        self.prepare()

    def prepare(self):
        """Create rows the resource's data refers to."""

    def make(self):
        return self.factory()

    def get_create_data(self) -> dict:
        return copy.deepcopy(self.create_data)

    def url(self, obj=None) -> str:
        return self.base_url if obj is None else f"{self.base_url}{obj.name}/"

    def queryset(self):
        return self.model.objects.all()

    # List and retrieve

    def test_list(self, api_client):
        objects = [self.make(), self.make()]
        response = api_client.get(self.url())
        assert response.status_code == 200, response.content
        names = {item["name"] for item in response.json()}
        assert {obj.name for obj in objects} <= names

    def test_retrieve(self, api_client):
        obj = self.make()
        response = api_client.get(self.url(obj))
        assert response.status_code == 200, response.content
        assert response.json()["name"] == obj.name
        for field in self.secret_fields:
            assert response.json().get(field) is None

    def test_retrieve_unknown_is_404(self, api_client):
        response = api_client.get(f"{self.url()}no-such-object/")
        assert response.status_code == 404
        assert "detail" in response.json()

    # Create

    def test_create(self, api_client):
        before = ConfigRevision.current()
        data = self.get_create_data()
        response = api_client.post(self.url(), data)
        assert response.status_code == 201, response.content
        assert response.json()["name"] == data["name"]
        assert self.queryset().filter(name=data["name"]).exists()
        assert ConfigRevision.current() > before
        for field in self.secret_fields:
            assert response.json().get(field) is None

    def test_create_duplicate_is_409(self, api_client):
        data = self.get_create_data()
        assert api_client.post(self.url(), data).status_code == 201
        count = self.queryset().count()
        response = api_client.post(self.url(), data)
        assert response.status_code == 409, response.content
        assert "name" in response.json()
        assert self.queryset().count() == count

    def test_create_unknown_field_is_400(self, api_client):
        count = self.queryset().count()
        response = api_client.post(self.url(), {**self.get_create_data(), "colour": "blue", "size": 3})
        assert response.status_code == 400
        assert response.json()["colour"] == ["Unknown field."]
        assert "size" in response.json()
        assert self.queryset().count() == count

    def test_create_missing_fields_is_400(self, api_client):
        count = self.queryset().count()
        response = api_client.post(self.url(), {})
        assert response.status_code == 400
        assert "name" in response.json()
        assert self.queryset().count() == count

    def test_create_malformed_json_is_400(self, api_client):
        count = self.queryset().count()
        response = api_client.generic("POST", self.url(), '{"name": ', content_type="application/json")
        assert response.status_code == 400
        assert "JSON parse error" in response.json()["detail"]
        assert self.queryset().count() == count

    # Update

    def test_update(self, api_client):
        obj = self.make()
        before = ConfigRevision.current()
        response = api_client.put(self.url(obj), {**copy.deepcopy(self.update_data), "name": obj.name})
        assert response.status_code == 200, response.content
        self.assert_updated(self.queryset().get(pk=obj.pk), self.update_data)
        assert ConfigRevision.current() > before

    def test_partial_update(self, api_client):
        obj = self.make()
        response = api_client.patch(self.url(obj), copy.deepcopy(self.patch_data))
        assert response.status_code == 200, response.content
        self.assert_updated(self.queryset().get(pk=obj.pk), self.patch_data)

    def test_rename_is_400(self, api_client):
        obj = self.make()
        response = api_client.patch(self.url(obj), {"name": f"{obj.name}-renamed"})
        assert response.status_code == 400
        assert "name" in response.json()

    def test_update_unknown_field_is_400(self, api_client):
        obj = self.make()
        response = api_client.patch(self.url(obj), {"colour": "blue"})
        assert response.status_code == 400
        assert response.json() == {"colour": ["Unknown field."]}

    def test_update_unknown_is_404(self, api_client):
        response = api_client.put(f"{self.url()}no-such-object/", self.get_create_data())
        assert response.status_code == 404

    def assert_updated(self, obj, data):
        for field, value in data.items():
            if isinstance(getattr(obj, field, None), str | bool | int | dict) or getattr(obj, field, None) is None:
                assert getattr(obj, field) == value, field

    # Delete

    def test_delete(self, api_client):
        obj = self.make()
        before = ConfigRevision.current()
        response = api_client.delete(self.url(obj))
        assert response.status_code == 204, response.content
        assert not self.queryset().filter(pk=obj.pk).exists()
        assert ConfigRevision.current() > before

    def test_delete_unknown_is_404(self, api_client):
        assert api_client.delete(f"{self.url()}no-such-object/").status_code == 404

    # Access

    def test_anonymous_is_refused(self, anon_client):
        assert anon_client.get(self.url()).status_code in (401, 403)
        assert anon_client.post(self.url(), self.get_create_data()).status_code in (401, 403)

    def test_non_admin_is_refused(self, staff_less_client):
        assert staff_less_client.get(self.url()).status_code == 403
