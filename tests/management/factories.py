"""factory_boy factories for the configuration models.

Rows with behaviour on save (encrypted values, generated keys, validated policies) go through the services.
"""

import factory
from factory.django import DjangoModelFactory

from apis.models import API, Operation
from backends.models import Backend
from content_safety.models import Blocklist
from named_values.models import NamedValue
from named_values.services import create_named_value
from subscriptions.models import Product, Subscription
from subscriptions.services import Scope, create_subscription

__all__ = (
    "APIFactory",
    "BackendFactory",
    "NamedValueFactory",
    "OperationFactory",
    "ProductFactory",
    "SubscriptionFactory",
)


class APIFactory(DjangoModelFactory):
    class Meta:
        model = API

    name = factory.Sequence(lambda n: f"api-{n}")
    display_name = factory.Faker("sentence", nb_words=3)
    path = factory.Sequence(lambda n: f"llm/api-{n}")
    service_url = "https://llm.example.com/v1"
    api_type = "openai"


class OperationFactory(DjangoModelFactory):
    class Meta:
        model = Operation

    api = factory.SubFactory(APIFactory)
    name = factory.Sequence(lambda n: f"op-{n}")
    display_name = factory.Faker("sentence", nb_words=4)
    method = "POST"
    url_template = factory.Sequence(lambda n: f"/op-{n}")


class BackendFactory(DjangoModelFactory):
    class Meta:
        model = Backend

    name = factory.Sequence(lambda n: f"backend-{n}")
    url = factory.Sequence(lambda n: f"https://backend-{n}.example.com/v1")


class BlocklistFactory(DjangoModelFactory):
    class Meta:
        model = Blocklist

    name = factory.Sequence(lambda n: f"blocklist-{n}")
    items = factory.LazyFunction(lambda: [{"kind": "term", "value": "forbidden"}])


class NamedValueFactory(DjangoModelFactory):
    class Meta:
        model = NamedValue

    name = factory.Sequence(lambda n: f"nv-{n}")
    value = factory.Faker("pystr", min_chars=12, max_chars=24)
    secret = False
    tags = factory.LazyFunction(list)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return create_named_value(**kwargs)


class ProductFactory(DjangoModelFactory):
    class Meta:
        model = Product
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"product-{n}")
    display_name = factory.Faker("company")

    @factory.post_generation
    def apis(self, create, extracted, **kwargs):
        if create and extracted:
            self.apis.add(*extracted)


class SubscriptionFactory(DjangoModelFactory):
    class Meta:
        model = Subscription

    name = factory.Sequence(lambda n: f"sub-{n}")
    display_name = factory.Faker("name")
    api = None
    product = None
    state = "active"

    @classmethod
    def _create(cls, model_class, *args, api=None, product=None, **kwargs):
        return create_subscription(scope=Scope(api=api, product=product), **kwargs)
